/**
 * The background scheduler: one pass every interval, never overlapping (the next pass is armed only when
 * the previous one has settled). A pass records stream activity, auto-pauses idle sandboxes and retries
 * destroys that did not complete. `/readyz` reports the time of the last pass that finished.
 */
import type { Logger } from "./log.js";
import type { HostRef, Sandboxes } from "./sandboxes.js";
import type { Store } from "./store/types.js";

export interface SchedulerDeps {
  store: Store;
  host: HostRef;
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
    const { store, host, sandboxes, log } = this.d;
    const now = Date.now();
    for (const id of sandboxes.openStreams.keys()) await store.touchActivity(id, now);
    if (host.daemon) {
      for (const row of await store.idleSandboxes(now)) {
        if (sandboxes.openStreams.has(row.id) || sandboxes.isLocked(row.id)) continue;
        log.info("auto-pause", {
          sandbox_id: row.id,
          idle_s: Math.round((now - row.last_activity_at) / 1000),
        });
        await sandboxes
          .pause(row, `auto-pause after ${row.auto_pause_after_seconds}s idle`)
          .catch((e) => log.warn("auto-pause refused", { sandbox_id: row.id, err: String(e) }));
      }
      const daemon = host.daemon;
      for (const row of await store.sandboxesInStatus(["destroying"])) {
        if (sandboxes.isLocked(row.id)) continue;
        void sandboxes
          .withLock(row.id, () => sandboxes.completeDestroy(daemon, row.id))
          .catch((e) => log.warn("destroy retry failed", { sandbox_id: row.id, err: String(e) }));
      }
    }
    this.lastOkAt = performance.now();
  }
}
