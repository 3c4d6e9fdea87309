/**
 * Bytes that come in through the ingress proxy, into `bandwidth_ingress_bytes`. They reach the guest on the
 * agent's channel, not its network interface, so the host's network counters never see them: the proxy
 * counts what it sends into the guest (request heads and bodies, a WebSocket's client-to-guest bytes) and
 * adds it to the row about once a second per sandbox, under the sandbox's lock like every other
 * read-modify-write of its counters.
 */
import type { Sandboxes } from "../sandboxes.js";
import type { Store } from "../store/types.js";

const FLUSH_MS = 1000;

export class IngressMeter {
  private readonly pending = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly sandboxes: Sandboxes,
  ) {}

  add(id: string, bytes: number): void {
    if (bytes <= 0) return;
    const had = this.pending.get(id);
    this.pending.set(id, (had ?? 0) + bytes);
    if (had === undefined) setTimeout(() => void this.flush(id), FLUSH_MS).unref();
  }

  /** Writes what `id` has pending; what arrives meanwhile waits for the next flush. */
  async flush(id: string): Promise<void> {
    const n = this.pending.get(id) ?? 0;
    this.pending.delete(id);
    if (n <= 0) return;
    await this.sandboxes
      .withLock(id, async () => {
        const row = await this.store.getSandbox(id);
        if (row)
          await this.store.updateSandbox(id, { bandwidth_ingress_bytes: row.bandwidth_ingress_bytes + n });
      })
      .catch(() => undefined);
  }

  /** Everything pending, now (shutdown). */
  async flushAll(): Promise<void> {
    await Promise.all([...this.pending.keys()].map((id) => this.flush(id)));
  }
}
