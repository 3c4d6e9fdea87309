/**
 * The host daemons this control plane drives: the embedded one, or one per `serve --hostd <url>`. Every
 * sandbox row names its host (`host_id`); its operations go to that host only. A host that stops
 * answering is marked unhealthy by the health check, and its sandboxes' operations answer 503 with
 * Retry-After at once (before anything is changed, so the client's retry is safe) until it answers
 * again, when it is reconciled like a restart.
 *
 * Placement: a new sandbox goes to the healthy, ready host with the most free memory that has the
 * image built (any healthy host with room when none has it). Resume and fork stay on the host that
 * holds the snapshot until snapshots live in shared storage.
 */
import { type HostDaemon, type HostInfo, apiError } from "@createos-sandbox/protocol";
import { publicHostId, publicReason } from "./hosterr.js";
import type { Logger } from "./log.js";

export interface HostRef {
  /** Known once the daemon answered `info()`; before that, its URL or "local". */
  id: string;
  daemon: HostDaemon | undefined;
  /** Set while the host cannot take new work (engine missing, default image building …). */
  notReady: string | undefined;
  healthy: boolean;
  /** Why the last health check failed. */
  lastError?: string | undefined;
  /** The last `info()` answer, with free memory lowered by placements made since. */
  info?: HostInfo;
}

/** Health checks: how often, and how long an `info()` may take before the host counts as down. */
export const HEALTH_INTERVAL_MS = 2_000;
export const HEALTH_TIMEOUT_MS = 3_000;

const text = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The host's sandboxes can be operated on now. */
export const isUp = (h: HostRef): h is HostRef & { daemon: HostDaemon } => !!h.daemon && h.healthy;
/** The host can also take new sandboxes. */
export const isReady = (h: HostRef): boolean => isUp(h) && !h.notReady;

export class Hosts {
  private readonly refs: HostRef[] = [];
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(
    private readonly log: Logger,
    /** Called when an unhealthy host answers again (its VMs may have changed meanwhile). */
    private readonly onRecovered: (h: HostRef) => Promise<void> = async () => undefined,
    /** What readyz and 503s say while no host is configured. */
    private readonly noHosts = "no host daemon is configured",
  ) {}

  add(ref: HostRef): HostRef {
    this.refs.push(ref);
    return ref;
  }

  all(): readonly HostRef[] {
    return this.refs;
  }

  byId(id: string): HostRef | undefined {
    return this.refs.find((h) => h.id === id);
  }

  /** True when the host's sandboxes can be operated on now (the scheduler skips the others). */
  reachable(hostId: string | undefined): boolean {
    const h = this.find(hostId);
    return !!h && isUp(h);
  }

  /** True when some host can take new sandboxes. */
  anyReady(): boolean {
    return this.refs.some(isReady);
  }

  /** Why no host can take new sandboxes (for readyz and 503s): fixed phrases, details in the log. */
  notReadyReason(): string {
    if (this.refs.length === 0) return publicReason(this.noHosts);
    return this.refs.map((h, i) => `${publicHostId(h.id, i)}: ${this.publicWhyNot(h) ?? "ready"}`).join("; ");
  }

  /** `whyNot()` in fixed phrases, as a client may see it. */
  publicWhyNot(h: HostRef): string | undefined {
    const why = this.whyNot(h);
    return why === undefined ? undefined : publicReason(why);
  }

  /** Why the host cannot take new sandboxes, in the underlying error's words (for the operator). */
  whyNot(h: HostRef): string | undefined {
    if (!h.daemon) return h.notReady ?? "no host daemon is loaded";
    if (!h.healthy) return `host daemon is unreachable (${h.lastError ?? "no answer"})`;
    return h.notReady;
  }

  /** A row's host; rows from before hosts were recorded belong to the only host there is. */
  private find(hostId: string | undefined): HostRef | undefined {
    if (!hostId) return this.refs.length === 1 ? this.refs[0] : undefined;
    return this.byId(hostId);
  }

  /** The daemon of the host a sandbox lives on, or a 503 naming the reason. */
  daemonOf(hostId: string | undefined, opts: { ready?: boolean } = {}): HostDaemon {
    const h = this.find(hostId);
    if (!h) {
      const connecting = this.refs.some((r) => !r.daemon || r.notReady?.startsWith("connecting"));
      const reason = connecting
        ? `host ${hostId} has not connected yet`
        : `host ${hostId} is not configured on this control plane`;
      throw apiError("host_unavailable", { reason });
    }
    const why = this.publicWhyNot(h);
    if (!isUp(h) || (opts.ready && why))
      throw apiError("host_unavailable", { reason: `${publicHostId(h.id, this.refs.indexOf(h))}: ${why}` });
    return h.daemon;
  }

  /** Chooses the host for a new VM of `memMib` running `image` (`wanted`: the caller's `host_id`). */
  place(memMib: number, image: string, wanted?: string): HostRef {
    const usable = this.refs.filter((h) => isReady(h) && (!wanted || h.id === wanted));
    if (!usable.length) throw apiError("host_unavailable", { reason: this.notReadyReason() });
    const free = (h: HostRef) => h.info?.free_mib ?? 0;
    const withRoom = usable.filter((h) => free(h) >= memMib);
    if (!withRoom.length) {
      const best = Math.max(...usable.map(free));
      throw apiError("host_capacity", {
        reason: `${memMib} MiB wanted, at most ${best} MiB free on any host`,
      });
    }
    const built = withRoom.filter((h) => h.info?.rootfses.includes(image));
    const pool = built.length ? built : withRoom;
    const host = pool.reduce((a, b) => (free(b) > free(a) ? b : a));
    // Until the next health check refreshes it, count this VM as promised.
    if (host.info) host.info = { ...host.info, free_mib: free(host) - memMib };
    return host;
  }

  /** One `info()` of every host; an unreachable host becomes unhealthy, a returning one is reconciled. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      await Promise.all(this.refs.map((h) => this.checkOne(h)));
    } finally {
      this.checking = false;
    }
  }

  /** A fresh reading of every host for a listing, waiting at most `ms` (a slow host keeps its last one). */
  async refresh(ms = 1000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.refs.map((h) => this.checkOne(h))),
      new Promise((r) => {
        timer = setTimeout(r, ms);
      }),
    ]);
    clearTimeout(timer);
  }

  private async checkOne(h: HostRef): Promise<void> {
    const d = h.daemon;
    if (!d) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      const info = await Promise.race([
        d.info(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer in ${HEALTH_TIMEOUT_MS} ms`)),
            HEALTH_TIMEOUT_MS,
          );
        }),
      ]);
      h.info = info;
      if (!h.healthy) {
        h.healthy = true;
        h.lastError = undefined;
        this.log.now("host is back", { host_id: h.id });
        await this.onRecovered(h).catch((e) =>
          this.log.error("reconcile after recovery failed", { host_id: h.id, err: e }),
        );
      }
    } catch (e) {
      if (h.healthy) this.log.warn("host is unreachable", { host_id: h.id, err: text(e) });
      h.healthy = false;
      h.lastError = text(e);
    } finally {
      clearTimeout(timer);
    }
  }

  start(intervalMs = HEALTH_INTERVAL_MS): void {
    const loop = () => {
      void this.check().finally(() => {
        if (this.timer) this.timer = setTimeout(loop, intervalMs).unref();
      });
    };
    this.timer = setTimeout(loop, intervalMs).unref();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
