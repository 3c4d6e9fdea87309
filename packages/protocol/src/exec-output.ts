/**
 * Exec output handed to ExecEvents callbacks one chunk at a time: while the promise a callback returned is
 * pending, later chunks wait here, in order. Whoever feeds it holds the sender back meanwhile (the guest's
 * credit, a paused socket), so what waits is bounded by that window, and a consumer sees at most one
 * chunk it has not taken yet (one `drain` listener, not one per chunk).
 */
import type { ExecEvents } from "./hostd.js";

type Chunk = { err: boolean; data: Buffer };

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && typeof v === "object" && typeof (v as PromiseLike<unknown>).then === "function";

export class ExecOutput {
  private queue: Chunk[] = [];
  private busy = false;
  /** Bumped by clear(): a promise of a chunk from before it settles into nothing. */
  private gen = 0;
  private idleWaiters: (() => void)[] = [];
  /** Bytes queued or handed over whose callback has not settled. */
  held = 0;

  /**
   * `taken(held)` runs after a chunk was taken (the sender may be given credit for what is no longer
   * held); `failed` when a callback threw or its promise rejected (the rest is dropped).
   */
  constructor(
    private readonly events: ExecEvents,
    private readonly taken: (held: number) => void,
    private readonly failed: (e: unknown) => void,
  ) {}

  push(err: boolean, data: Buffer): void {
    this.queue.push({ err, data });
    this.held += data.length;
    this.pump();
  }

  /** Drops what waits (the exec was cancelled or failed): nobody wants it any more. */
  clear(): void {
    this.queue = [];
    this.held = 0;
    this.busy = false;
    this.gen++;
    this.wakeIdle();
  }

  /** Resolves once every chunk pushed so far was taken (or dropped). */
  idle(): Promise<void> {
    if (!this.busy && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private pump(): void {
    while (!this.busy && this.queue.length > 0) {
      const c = this.queue.shift()!;
      let r: unknown;
      try {
        r = c.err ? this.events.onStderr?.(c.data) : this.events.onStdout?.(c.data);
      } catch (e) {
        this.fail(e);
        return;
      }
      if (isThenable(r)) {
        this.busy = true;
        const gen = this.gen;
        r.then(
          () => gen === this.gen && this.settled(c),
          (e: unknown) => gen === this.gen && this.fail(e),
        );
        break;
      }
      this.held -= c.data.length;
    }
    this.taken(this.held);
    if (!this.busy && this.queue.length === 0) this.wakeIdle();
  }

  private settled(c: Chunk): void {
    this.busy = false;
    this.held -= c.data.length;
    this.pump();
  }

  private fail(e: unknown): void {
    this.clear();
    this.failed(e);
    this.taken(0);
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }
}
