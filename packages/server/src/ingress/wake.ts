/**
 * Wake on request: an ingress request for a paused sandbox resumes it through the same lifecycle path as
 * `POST …/resume` (intent recorded as `resuming` before the host daemon is asked), and waits, bounded,
 * until it runs. Concurrent requests for one sandbox share one wake: the first asks, the rest wait with it.
 */
import { SingleFlight } from "@createos-sandbox/hostd/sys/fs";
import { ApiError, apiError } from "@createos-sandbox/protocol";
import type { App } from "../routes/common.js";
import type { SandboxRow } from "../store/types.js";

/** Statuses a request waits out (the sandbox is on its way to running, or about to be paused and woken). */
const WAIT: readonly string[] = ["pausing", "resuming", "creating", "forking"];

/** The sandbox did not run before the request's deadline. */
export class WakeTimeout extends Error {}

export class Waker {
  private readonly flight = new SingleFlight<SandboxRow>();

  constructor(private readonly app: App) {}

  /** The row once the sandbox runs, waking it if paused; rejects with an ApiError or WakeTimeout. */
  running(row: SandboxRow, until: number): Promise<SandboxRow> {
    if (row.status === "running") return Promise.resolve(row);
    return this.flight.do(row.id, () => this.wake(row.id, until));
  }

  private async wake(id: string, until: number): Promise<SandboxRow> {
    for (;;) {
      const r = await this.app.store.getSandbox(id);
      if (!r) throw apiError("sandbox_not_found", { id });
      if (r.status === "running") return r;
      if (r.status === "paused") {
        this.app.log.info("ingress wakes sandbox", { sandbox_id: id });
        try {
          await this.app.sandboxes.resume(r);
        } catch (e) {
          // Another replica or an API call changed it first: look again.
          if (!(e instanceof ApiError && e.code === "state_conflict")) throw e;
        }
      } else if (!WAIT.includes(r.status)) {
        throw apiError("state_conflict", { action: "wake", status: r.status });
      }
      if (Date.now() >= until) throw new WakeTimeout(`sandbox ${id} is still ${r.status}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }
}
