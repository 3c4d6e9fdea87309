/**
 * What a guest raises on its own (self-signals, protocol warnings) is untrusted and may come in a flood
 * (`while :; do echo park > /run/self; done`): each self event costs the control plane a database read, a
 * lifecycle attempt and a log line. Per VM they pass a token bucket; past it they are coalesced — one
 * pending pause and one pending delete, the latest reason kept — and delivered as the bucket refills, so a
 * flooding guest yields a bounded trickle of events and its last wish is still honoured.
 */

export type SelfAction = "pause" | "delete";

export interface GuestEventLimits {
  /** Self events delivered at once before throttling starts. */
  burst: number;
  /** Milliseconds per token once the burst is spent. */
  refillMs: number;
  /** Warnings logged per VM per `refillMs × burst` window; the rest are counted. */
  warnings: number;
}

export const GUEST_EVENT_LIMITS: GuestEventLimits = { burst: 3, refillMs: 2000, warnings: 5 };

export class GuestEventGate {
  private tokens: number;
  private at = performance.now();
  private readonly pending = new Map<SelfAction, string | undefined>();
  private timer: NodeJS.Timeout | undefined;
  private dropped = 0;
  private warnWindow = { start: 0, n: 0, suppressed: 0 };
  private closed = false;

  constructor(
    private readonly deliver: (action: SelfAction, reason: string | undefined) => void,
    /** Told once per throttled stretch how many events were folded into others. */
    private readonly onCoalesced: (dropped: number) => void,
    private readonly limits: GuestEventLimits = GUEST_EVENT_LIMITS,
  ) {
    this.tokens = limits.burst;
  }

  self(action: SelfAction, reason: string | undefined): void {
    if (this.closed) return;
    this.refill();
    if (this.tokens >= 1 && this.pending.size === 0) {
      this.tokens -= 1;
      this.deliver(action, reason);
      return;
    }
    if (this.pending.has(action)) this.dropped++;
    this.pending.set(action, reason);
    this.schedule();
  }

  /** Whether a guest-caused warning may be logged now (false: it is counted and summarised later). */
  warning(): { log: boolean; suppressed: number } {
    const now = performance.now();
    const w = this.warnWindow;
    if (now - w.start > this.limits.refillMs * this.limits.burst) {
      const suppressed = w.suppressed;
      this.warnWindow = { start: now, n: 1, suppressed: 0 };
      return { log: true, suppressed };
    }
    if (w.n < this.limits.warnings) {
      w.n++;
      return { log: true, suppressed: 0 };
    }
    w.suppressed++;
    return { log: false, suppressed: 0 };
  }

  /** The VM is gone: what is still pending is dropped, and the tally of a throttled stretch reported. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    const dropped = this.dropped + this.pending.size;
    this.pending.clear();
    if (dropped > 0) this.onCoalesced(dropped);
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.limits.burst, this.tokens + (now - this.at) / this.limits.refillMs);
    this.at = now;
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = Math.max(1, Math.ceil((1 - this.tokens) * this.limits.refillMs));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
    this.timer.unref();
  }

  /** One pending event per token; a delete goes first (it makes a pending pause moot). */
  private flush(): void {
    if (this.closed) return;
    this.refill();
    for (const action of ["delete", "pause"] as const) {
      if (!this.pending.has(action) || this.tokens < 1) continue;
      const reason = this.pending.get(action);
      this.pending.delete(action);
      this.tokens -= 1;
      this.deliver(action, reason);
      if (action === "delete" && this.pending.delete("pause")) this.dropped++;
    }
    if (this.pending.size > 0) {
      this.schedule();
      return;
    }
    if (this.dropped > 0) this.onCoalesced(this.dropped);
    this.dropped = 0;
  }
}
