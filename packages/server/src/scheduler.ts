import type { Hosts } from "./hosts.js";
/**
 * The background scheduler: one pass every interval, never overlapping (the next pass is armed only when
 * the previous one has settled). A pass records stream activity, auto-pauses idle sandboxes and retries
 * destroys that did not complete. `/readyz` reports the time of the last pass that finished.
 */
import type { Logger } from "./log.js";
import type { Sandboxes } from "./sandboxes.js";
import type { Store } from "./store/types.js";

export interface SchedulerDeps {
  store: Store;
  hosts: Hosts;
  sandboxes: Sandboxes;
  log: Logger;
  intervalMs: number;
}

export class Scheduler {
  private started = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lastOkAt: number | undefined;

  constructor(private readonly d: SchedulerDeps) {}

  /** `performance.now()` at the end of the last pass that completed, if any. */
  lastOk(): number | undefined {
    return this.lastOkAt;
  }

  /** Runs the first pass now; once only (a stopped scheduler stays stopped). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.loop();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private loop(): void {
    if (this.stopped) return;
    this.pass()
      .catch((e) => this.d.log.error("scheduler pass failed", { err: e }))
      .finally(() => {
        if (!this.stopped) this.timer = setTimeout(() => this.loop(), this.d.intervalMs);
      });
  }

  private async pass(): Promise<void> {
    const { store, hosts, sandboxes, log } = this.d;
    const now = Date.now();
    for (const id of sandboxes.openStreams.keys()) await store.touchActivity(id, now);
    // Sandboxes on a host that is down wait for it: their pauses and destroys would only answer 503.
    const idle = (await store.idleSandboxes(now)).filter((r) => hosts.reachable(r.host_id));
    for (const row of idle) {
      if (sandboxes.openStreams.has(row.id) || sandboxes.isLocked(row.id)) continue;
      log.info("auto-pause", {
        sandbox_id: row.id,
        idle_s: Math.round((now - row.last_activity_at) / 1000),
      });
      await sandboxes
        .pause(row, `auto-pause after ${row.auto_pause_after_seconds}s idle`)
        .catch((e) => log.warn("auto-pause refused", { sandbox_id: row.id, err: String(e) }));
    }
    for (const row of await store.sandboxesInStatus(["destroying"])) {
      if (sandboxes.isLocked(row.id) || !hosts.reachable(row.host_id)) continue;
      void sandboxes
        .retryDestroy(row)
        .catch((e) => log.warn("destroy retry failed", { sandbox_id: row.id, err: String(e) }));
    }
    this.lastOkAt = performance.now();
  }
}
