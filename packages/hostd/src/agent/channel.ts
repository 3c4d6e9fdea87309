/**
 * Frames over the agent socket (virtio-serial, or `createos-agent --listen`): `Mux` owns one socket,
 * decodes its frames and routes them to RPCs on channel 0 and to the open `Channel`s, each with its
 * credit window both ways (PROTOCOL.md "Flow control").
 */
import type net from "node:net";
import {
  DATA_CHUNK,
  type Frame,
  FrameDecoder,
  FrameKind,
  GRANT_BATCH,
  type HostCtrl,
  HostdError,
  INITIAL_WINDOW,
  type OpenRequest,
  type RpcError,
  type RpcRequest,
  type RpcResponse,
  encodeFrame,
  encodeJson,
  encodeWindow,
  windowValue,
} from "@createos-sandbox/protocol";
import { rpcError, unreachable } from "./errors.js";

export type Json = Record<string, unknown>;

/** A message as it arrives: the fields of T by name, each still to be checked. */
export type Untrusted<T> = { [K in keyof T]?: unknown };

export function parseJson(b: Buffer): Json {
  try {
    const v: unknown = JSON.parse(b.toString("utf8"));
    return v !== null && typeof v === "object" ? (v as Json) : {};
  } catch {
    return {};
  }
}

/** Window overruns one connection may commit before it is dropped: a guest that does it again is broken. */
export const MAX_OVERRUNS = 3;

/**
 * One open channel: credit accounting both ways plus hooks the operation fills in. The receive window is
 * enforced: data beyond the credit granted loses the guest the channel (Mux.overrun).
 */
export class Channel {
  private sendCredit = INITIAL_WINDOW;
  private creditWaiters: (() => void)[] = [];
  private received = 0;
  private granted = 0;
  /** Until the agent answers OPEN (the operation's own CTRL, or EXIT): fails the channel when it never does. */
  private replyTimer: NodeJS.Timeout | undefined;
  closed = false;
  /** The agent sent EXIT: it forgot the channel, so nothing more is sent on it. */
  private exited = false;
  closeError: Error | undefined;
  onCtrl: (m: Json) => void = () => {};
  onData: (kind: number, data: Buffer) => void = () => {};
  onEof: () => void = () => {};
  onExit: (m: Json) => void = () => {};
  /** The connection died (err) or the channel ended (EXIT, err undefined). */
  onClose: (err?: Error) => void = () => {};

  constructor(
    readonly mux: Mux,
    readonly id: number,
  ) {}

  /** Fails the channel unless the agent answers its OPEN within `ms`. */
  awaitReply(ms: number, what: string): void {
    this.replyTimer = setTimeout(() => {
      this.sendCtrl({ cancel: true });
      this.close(unreachable(`agent did not answer ${what} within ${ms} ms`));
    }, ms);
    this.replyTimer.unref?.();
  }

  /** The operation got its answer to OPEN (started, ready, connected, a size). */
  answered(): void {
    clearTimeout(this.replyTimer);
    this.replyTimer = undefined;
  }

  handle(f: Frame): void {
    switch (f.kind) {
      case FrameKind.CTRL:
        this.onCtrl(parseJson(f.payload));
        break;
      case FrameKind.STDOUT:
      case FrameKind.STDERR:
        if (this.received + f.payload.length - this.granted > INITIAL_WINDOW) {
          this.mux.overrun(this);
          break;
        }
        this.received += f.payload.length;
        this.onData(f.kind, f.payload);
        break;
      case FrameKind.EOF:
        this.onEof();
        break;
      case FrameKind.WINDOW:
        this.sendCredit += windowValue(f.payload);
        this.wake();
        break;
      case FrameKind.EXIT:
        this.answered();
        this.exited = true;
        this.mux.channels.delete(this.id);
        this.onExit(parseJson(f.payload));
        this.close();
        break;
    }
  }

  /**
   * Grant back what the consumer took: everything received that is no longer buffered. Batched
   * to GRANT_BATCH, or granted at once when the buffer ran dry so a trickle never stalls.
   */
  consumed(stillBuffered: number): void {
    if (this.closed) return;
    const n = this.received - this.granted - stillBuffered;
    if (n <= 0) return;
    if (n >= GRANT_BATCH || stillBuffered === 0) {
      this.granted += n;
      this.mux.write(encodeWindow(this.id, n));
    }
  }

  private wake(): void {
    const w = this.creditWaiters;
    this.creditWaiters = [];
    for (const f of w) f();
  }

  /** Sends data within the agent's window and the socket's buffer; resolves when it is handed off. */
  async sendData(data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length) {
      if (this.closed) throw this.closeError ?? new Error("channel closed");
      if (this.sendCredit <= 0) {
        await new Promise<void>((r) => this.creditWaiters.push(r));
        continue;
      }
      const n = Math.min(this.sendCredit, data.length - off, DATA_CHUNK);
      this.sendCredit -= n;
      const ok = this.mux.write(encodeFrame(FrameKind.STDIN, this.id, data.subarray(off, off + n)));
      off += n;
      if (!ok) await this.mux.drained();
    }
  }

  sendEof(): void {
    if (!this.closed && !this.exited) this.mux.write(encodeFrame(FrameKind.EOF, this.id));
  }

  sendCtrl(m: HostCtrl): void {
    if (!this.closed && !this.exited) this.mux.write(encodeJson(FrameKind.CTRL, this.id, m));
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    this.answered();
    this.mux.channels.delete(this.id);
    this.wake();
    this.onClose(err);
  }
}

interface PendingRpc {
  resolve(v: Json): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** What the owner of a Mux hears (agent events, warnings, the socket's end) and the limits it sets. */
export interface MuxOwner {
  event(m: Json & { event: string }): void;
  warn(msg: string, fields: Record<string, unknown>): void;
  lost(mux: Mux): void;
  /** Open channels at most (the guest's processes, files and tunnels of one VM). */
  readonly maxChannels: number;
  /** How long the agent may take to answer an OPEN (started, ready, connected, a file's size), ms. */
  readonly openTimeoutMs: number;
}

/** One socket connection; dies whole (channels and RPCs fail) when the socket closes. */
export class Mux {
  readonly decoder = new FrameDecoder();
  readonly channels = new Map<number, Channel>();
  private readonly pending = new Map<number, PendingRpc>();
  private drainWaiters: (() => void)[] = [];
  private nextChannel = 1;
  private overruns = 0;
  ready = false;
  closed = false;

  constructor(
    readonly sock: net.Socket,
    private readonly owner: MuxOwner,
  ) {
    sock.on("data", (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) {
        try {
          this.dispatch(f);
        } catch (e) {
          // A throwing listener (event, 'data') must not cost the other frames of this chunk;
          // it still surfaces as an uncaught error, as it would from any emitter.
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    });
    sock.on("drain", () => this.wakeDrain());
    sock.on("error", () => {});
    sock.on("close", () => this.shutdown(unreachable("agent connection closed")));
  }

  private wakeDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  drained(): Promise<void> {
    if (this.closed || !this.sock.writableNeedDrain) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  write(b: Buffer): boolean {
    if (this.closed) return true;
    return this.sock.write(b);
  }

  private dispatch(f: Frame): void {
    if (f.channel === 0) {
      if (f.kind !== FrameKind.RPC) return;
      const m: Untrusted<RpcResponse> & Json = parseJson(f.payload);
      if (typeof m.id === "number") {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        const err = m.error as Partial<RpcError> | undefined;
        if (err) p.reject(rpcError(err));
        else p.resolve((m.result as Json | undefined) ?? {});
      } else if (typeof m.event === "string") {
        this.owner.event(m as Json & { event: string });
      }
      return;
    }
    // Frames for channels we do not know are leftovers of a cancelled or previous session.
    this.channels.get(f.channel)?.handle(f);
  }

  rpc(id: number, method: string, params: object, timeoutMs: number): Promise<Json> {
    if (this.closed) return Promise.reject(unreachable("agent connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(unreachable(`agent did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      const req: RpcRequest = { id, method, params };
      this.write(encodeJson(FrameKind.RPC, 0, req));
    });
  }

  open(req: OpenRequest): Channel {
    if (this.closed) throw unreachable("agent connection closed");
    if (this.channels.size >= this.owner.maxChannels)
      throw new HostdError(
        "busy",
        `${this.channels.size} streams are open on this sandbox, the most it may have`,
      );
    let id = this.nextChannel;
    while (this.channels.has(id) || id === 0) id = (id + 1) >>> 0;
    this.nextChannel = (id + 1) >>> 0;
    const ch = new Channel(this, id);
    this.channels.set(id, ch);
    this.write(encodeJson(FrameKind.OPEN, id, req));
    ch.awaitReply(this.owner.openTimeoutMs, req.op);
    return ch;
  }

  /**
   * The agent sent data beyond the credit of `ch`: the channel is cancelled and failed (its data dropped,
   * never buffered), and after MAX_OVERRUNS of them the whole connection goes, as a broken one would.
   */
  overrun(ch: Channel): void {
    this.overruns++;
    this.owner.warn("guest agent overran a channel's receive window: channel closed", {
      channel: ch.id,
      overruns: this.overruns,
    });
    ch.sendCtrl({ cancel: true });
    ch.close(unreachable("the guest agent sent more than its window allowed: stream closed"));
    if (this.overruns >= MAX_OVERRUNS)
      this.shutdown(
        unreachable(`the guest agent overran its receive window ${this.overruns} times: connection dropped`),
      );
  }

  shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.sock.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const ch of [...this.channels.values()]) ch.close(err);
    this.wakeDrain();
    this.owner.lost(this);
  }
}
