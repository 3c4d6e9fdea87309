/**
 * Host side of the guest agent protocol (packages/agent/PROTOCOL.md): one unix socket (QEMU's
 * virtio-serial chardev, or `createos-agent --listen`), multiplexed into RPCs and byte channels with
 * per-channel credit windows, exposed as promises and Node streams with backpressure.
 */
import { EventEmitter } from "node:events";
import net from "node:net";
import { Duplex, Readable, Writable, pipeline } from "node:stream";
import {
  type Frame,
  FrameDecoder,
  FrameKind,
  GRANT_BATCH,
  HostdError,
  type HostdErrorCode,
  INITIAL_WINDOW,
  encodeFrame,
  encodeJson,
  encodeWindow,
  windowValue,
} from "@createos-sandbox/protocol";

export interface AgentClientOptions {
  /** Default timeout of one RPC, ms. */
  rpcTimeoutMs?: number;
  /** How long one hello waits before the client reconnects and says hello again, ms. */
  helloAttemptMs?: number;
  /** How long an operation waits for the agent when no connection is up, ms. */
  readyTimeoutMs?: number;
}

export interface HelloResult {
  version: number;
  agent: string;
  boot_id: string;
  uptime_ms: number;
  pid: number;
  /** Problems the agent found in its guest at boot (e.g. no timer interrupts); absent when none. */
  warnings?: string[];
}

export interface ConfigureParams {
  hostname?: string;
  /** Sandbox-wide env given to every exec (replaces the previous set). Secrets: never logged. */
  envs?: Record<string, string>;
  /** Host wall clock, ns since the epoch (a bigint is sent exactly). */
  time_ns?: number | bigint;
  /** 64 random bytes, base64. */
  entropy?: string;
  net?: { dns?: string[] };
}

export interface AgentStats {
  open_channels: number;
  resyncs: number;
  mem_available_kib: number;
  load1: number;
  orphans_reaped?: number;
}

/** An event from the agent: "ready" (boot_id) after boot and on every connect, "self" (action, reason). */
export interface AgentEvent {
  event: string;
  boot_id?: string;
  action?: "pause" | "delete";
  reason?: string;
}

export interface AgentExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Whole stdin, or a stream of it. Absent: /dev/null. */
  stdin?: Buffer | Readable;
}

export interface AgentExecEvents {
  onStdout?(chunk: Buffer): void;
  onStderr?(chunk: Buffer): void;
}

export interface AgentExecResult {
  exit_code: number;
  signal?: string;
  /** Set when the command could not start; exit_code is then -1. */
  error?: string;
  /** Agent-measured fork+exec time, µs. */
  spawn_us?: number;
  /** Agent-measured time from receiving the request to the exit with all output sent, µs. */
  wall_us?: number;
  /** Host-measured wall time from request to exit, ms. */
  exec_ms: number;
}

export interface AgentPtyRequest {
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  rows: number;
  cols: number;
}

export interface AgentPty {
  stream: Duplex;
  pid: number;
  resize(rows: number, cols: number): void;
  signal(name: string): void;
  exited: Promise<{ exit_code: number; signal?: string }>;
}

/** A failed guest operation: `code` is the errno name the agent reported ("ENOENT" …). */
export class AgentError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly hostdCode: HostdErrorCode,
  ) {
    super(message);
    this.name = "AgentError";
  }
}

const ERRNO_TO_HOSTD: Record<string, HostdErrorCode> = {
  ENOENT: "file_not_found",
  ENOTDIR: "file_not_found",
  EISDIR: "bad_request",
  EINVAL: "bad_request",
  EACCES: "bad_request",
  EROFS: "bad_request",
  EEXIST: "conflict",
  ENOSPC: "capacity",
  ECONNREFUSED: "bad_request",
  ETIMEDOUT: "agent_unreachable",
};

/** The HostdError the control plane understands for any error this client throws. */
export function toHostdError(e: unknown): HostdError {
  if (e instanceof HostdError) return e;
  if (e instanceof AgentError) return new HostdError(e.hostdCode, e.message);
  return new HostdError("internal", e instanceof Error ? e.message : String(e));
}

function agentError(msg: { error?: unknown; code?: unknown }): AgentError {
  const code = typeof msg.code === "string" ? msg.code : "EIO";
  return new AgentError(String(msg.error ?? "agent error"), code, ERRNO_TO_HOSTD[code] ?? "internal");
}

type Json = Record<string, unknown>;
const DATA_CHUNK = 256 << 10;

function parseJson(b: Buffer): Json {
  try {
    const v: unknown = JSON.parse(b.toString("utf8"));
    return v !== null && typeof v === "object" ? (v as Json) : {};
  } catch {
    return {};
  }
}

function unreachable(msg: string): HostdError {
  return new HostdError("agent_unreachable", msg);
}

/** One open channel: credit accounting both ways plus hooks the operation fills in. */
class Channel {
  private sendCredit = INITIAL_WINDOW;
  private creditWaiters: (() => void)[] = [];
  private received = 0;
  private granted = 0;
  closed = false;
  closeError: Error | undefined;
  onCtrl: (m: Json) => void = () => {};
  onData: (kind: number, data: Buffer) => void = () => {};
  onEof: () => void = () => {};
  onExit: (m: Json) => void = () => {};
  /** The connection died (err) or the channel ended (EXIT, err undefined). */
  onClose: (err?: Error) => void = () => {};

  constructor(
    readonly conn: Conn,
    readonly id: number,
  ) {}

  handle(f: Frame): void {
    switch (f.kind) {
      case FrameKind.CTRL:
        this.onCtrl(parseJson(f.payload));
        break;
      case FrameKind.STDOUT:
      case FrameKind.STDERR:
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
        this.conn.channels.delete(this.id);
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
      this.conn.write(encodeWindow(this.id, n));
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
      const ok = this.conn.write(encodeFrame(FrameKind.STDIN, this.id, data.subarray(off, off + n)));
      off += n;
      if (!ok) await this.conn.drained();
    }
  }

  sendEof(): void {
    if (!this.closed) this.conn.write(encodeFrame(FrameKind.EOF, this.id));
  }

  sendCtrl(m: Json): void {
    if (!this.closed) this.conn.write(encodeJson(FrameKind.CTRL, this.id, m));
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    this.conn.channels.delete(this.id);
    this.wake();
    this.onClose(err);
  }
}

interface PendingRpc {
  resolve(v: Json): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** One socket connection; dies whole (channels and RPCs fail) when the socket closes. */
class Conn {
  readonly decoder = new FrameDecoder();
  readonly channels = new Map<number, Channel>();
  private readonly pending = new Map<number, PendingRpc>();
  private drainWaiters: (() => void)[] = [];
  private nextChannel = 1;
  ready = false;
  closed = false;

  constructor(
    readonly sock: net.Socket,
    private readonly client: AgentClient,
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
      const m = parseJson(f.payload);
      if (typeof m.id === "number") {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        const err = m.error as { message?: string; code?: string } | undefined;
        if (err) p.reject(new AgentError(err.message ?? "rpc failed", err.code ?? "EIO", "internal"));
        else p.resolve((m.result as Json | undefined) ?? {});
      } else if (typeof m.event === "string") {
        this.client.emit("event", m as unknown as AgentEvent);
        // Also by name ("self", "ready") for listeners that want one kind.
        if (m.event !== "error" && m.event !== "event" && m.event !== "disconnect")
          this.client.emit(m.event, m);
      }
      return;
    }
    // Frames for channels we do not know are leftovers of a cancelled or previous session.
    this.channels.get(f.channel)?.handle(f);
  }

  rpc(id: number, method: string, params: Json, timeoutMs: number): Promise<Json> {
    if (this.closed) return Promise.reject(unreachable("agent connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(unreachable(`agent did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.write(encodeJson(FrameKind.RPC, 0, { id, method, params }));
    });
  }

  open(req: Json): Channel {
    if (this.closed) throw unreachable("agent connection closed");
    let id = this.nextChannel;
    while (this.channels.has(id) || id === 0) id = (id + 1) >>> 0;
    this.nextChannel = (id + 1) >>> 0;
    const ch = new Channel(this, id);
    this.channels.set(id, ch);
    this.write(encodeJson(FrameKind.OPEN, id, req));
    return ch;
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
    this.client.connLost(this);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Client of one guest agent. Operations connect (and say hello) on demand; a lost connection fails
 * what was in flight with HostdError("agent_unreachable") and the next operation reconnects.
 * Emits "event" (every AgentEvent), the event by its name ("self", "ready") and "disconnect".
 */
export class AgentClient extends EventEmitter {
  private conn: Conn | undefined;
  private connecting: Promise<Conn> | undefined;
  private nextRpcId = 1;
  private closedByUser = false;
  private readonly rpcTimeoutMs: number;
  private readonly helloAttemptMs: number;
  private readonly readyTimeoutMs: number;

  constructor(
    readonly socketPath: string,
    opts: AgentClientOptions = {},
  ) {
    super();
    this.rpcTimeoutMs = opts.rpcTimeoutMs ?? 30_000;
    this.helloAttemptMs = opts.helloAttemptMs ?? 1_000;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  }

  get connected(): boolean {
    return this.conn?.ready === true && !this.conn.closed;
  }

  /** @internal */
  connLost(c: Conn): void {
    if (this.conn === c) {
      this.conn = undefined;
      this.emit("disconnect");
    }
  }

  /**
   * Connects and says hello, retrying until the agent answers or `timeoutMs` passes: the readiness
   * probe after boot or restore. Each attempt that gets no answer in time reconnects, so a hello
   * stuck in a socket nobody reads yet is dropped rather than answered late.
   */
  async waitReady(opts?: number | { timeoutMs?: number }): Promise<HelloResult> {
    const timeoutMs = (typeof opts === "number" ? opts : opts?.timeoutMs) ?? this.readyTimeoutMs;
    this.closedByUser = false;
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    let backoff = 10;
    for (;;) {
      let conn: Conn | undefined;
      try {
        conn = await this.dial(Math.max(1, Math.min(this.helloAttemptMs, deadline - Date.now())));
        const res = await conn.rpc(
          this.nextRpcId++,
          "hello",
          { version: 1 },
          Math.max(1, Math.min(this.helloAttemptMs, deadline - Date.now())),
        );
        if (conn.closed) throw unreachable("agent connection closed");
        const old = this.conn;
        conn.ready = true;
        this.conn = conn;
        if (old && old !== conn) old.shutdown(unreachable("replaced by a new connection"));
        return res as unknown as HelloResult;
      } catch (e) {
        lastErr = e;
        if (conn && conn !== this.conn) conn.shutdown(unreachable("hello failed"));
      }
      if (this.closedByUser) throw unreachable("client closed");
      if (Date.now() >= deadline) {
        const why = lastErr instanceof Error ? lastErr.message : String(lastErr);
        throw unreachable(`agent at ${this.socketPath} not ready after ${timeoutMs} ms: ${why}`);
      }
      await sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
      backoff = Math.min(backoff * 2, 200);
    }
  }

  private dial(timeoutMs: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: this.socketPath });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(unreachable("connect timeout"));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        sock.setNoDelay?.(true);
        resolve(new Conn(sock, this));
      });
      sock.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** The live connection, connecting (and saying hello) first when there is none. */
  private session(): Promise<Conn> {
    if (this.conn?.ready && !this.conn.closed) return Promise.resolve(this.conn);
    if (!this.connecting) {
      this.connecting = this.waitReady()
        .then(() => {
          if (!this.conn) throw unreachable("agent connection closed");
          return this.conn;
        })
        .finally(() => {
          this.connecting = undefined;
        });
    }
    return this.connecting;
  }

  /** Says hello on a fresh connection (closing the current one: its channels are gone). */
  async hello(opts?: number | { timeoutMs?: number }): Promise<HelloResult> {
    this.conn?.shutdown(unreachable("reconnecting"));
    return this.waitReady(opts);
  }

  async rpc(method: string, params: Json = {}, timeoutMs = this.rpcTimeoutMs): Promise<Json> {
    const conn = await this.session();
    return conn.rpc(this.nextRpcId++, method, params, timeoutMs);
  }

  async configure(p: ConfigureParams): Promise<void> {
    const { time_ns, ...rest } = p;
    await this.rpc("configure", time_ns === undefined ? rest : { ...rest, time_ns: Number(time_ns) });
  }

  /** Clock + RNG resync (after resume); returns how far the guest clock was off, ms (host − guest). */
  async sync(p: { time_ns?: number | bigint; entropy?: string } = {}): Promise<{ skew_ms: number }> {
    const time_ns = Number(p.time_ns ?? BigInt(Date.now()) * 1_000_000n);
    const r = await this.rpc("sync", { ...p, time_ns });
    return { skew_ms: Number(r.skew_ms ?? 0) };
  }

  async quiesce(): Promise<void> {
    await this.rpc("quiesce", {});
  }

  /** Lifts a quiesce on the same connection (the pause it prepared for was abandoned). */
  async thaw(): Promise<void> {
    await this.rpc("thaw", {});
  }

  async resizeFs(device = "/dev/vda"): Promise<{ size_bytes: number }> {
    const r = await this.rpc("resize_fs", { device });
    return { size_bytes: Number(r.size_bytes ?? 0) };
  }

  async stats(): Promise<AgentStats> {
    return (await this.rpc("stats", {})) as unknown as AgentStats;
  }

  async shutdown(reboot = false): Promise<void> {
    await this.rpc("shutdown", { reboot });
  }

  /** Closes the connection; the next operation reconnects. */
  close(): void {
    this.closedByUser = true;
    this.conn?.shutdown(unreachable("client closed"));
    this.conn = undefined;
  }

  /**
   * Runs argv and resolves at exit (after all output was delivered). Aborting `signal` kills the
   * process group; the promise then resolves with the agent's result (signal "SIGKILL").
   */
  async exec(
    req: AgentExecRequest,
    events: AgentExecEvents = {},
    signal?: AbortSignal,
  ): Promise<AgentExecResult> {
    const t0 = performance.now();
    signal?.throwIfAborted();
    const conn = await this.session();
    const open: Json = { op: "exec", argv: req.argv, stdin: req.stdin !== undefined };
    if (req.env) open.env = req.env;
    if (req.cwd) open.cwd = req.cwd;
    const ch = conn.open(open);
    return new Promise<AgentExecResult>((resolve, reject) => {
      let spawnUs: number | undefined;
      let callbackError: unknown;
      const onAbort = () => ch.sendCtrl({ cancel: true });
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => signal?.removeEventListener("abort", onAbort);
      ch.onCtrl = (m) => {
        if (m.started !== true) return;
        if (typeof m.spawn_us === "number") spawnUs = m.spawn_us;
        if (req.stdin !== undefined) pipeIn(ch, req.stdin);
      };
      ch.onData = (kind, data) => {
        try {
          if (callbackError === undefined) {
            if (kind === FrameKind.STDOUT) events.onStdout?.(data);
            else events.onStderr?.(data);
          }
        } catch (e) {
          // The caller cannot take the output: stop the command and report its error.
          callbackError = e;
          ch.sendCtrl({ cancel: true });
        } finally {
          ch.consumed(0);
        }
      };
      ch.onExit = (m) => {
        done();
        if (callbackError !== undefined) {
          reject(callbackError);
          return;
        }
        const r: AgentExecResult = {
          exit_code: typeof m.exit_code === "number" ? m.exit_code : -1,
          exec_ms: performance.now() - t0,
        };
        if (typeof m.signal === "string") r.signal = m.signal;
        if (typeof m.error === "string") r.error = m.error;
        if (spawnUs !== undefined) r.spawn_us = spawnUs;
        if (typeof m.wall_us === "number") r.wall_us = m.wall_us;
        resolve(r);
      };
      ch.onClose = (err) => {
        done();
        if (err) reject(err);
      };
    });
  }

  /** Opens a shell (or argv) on a new PTY; output arrives on `stream`, input is written to it. */
  async openPty(req: AgentPtyRequest): Promise<AgentPty> {
    const conn = await this.session();
    // No argv: the agent starts a login shell (bash where the image has it).
    const open: Json = {
      op: "exec",
      argv: req.argv ?? [],
      stdin: true,
      pty: { rows: req.rows, cols: req.cols },
    };
    if (req.env) open.env = req.env;
    if (req.cwd) open.cwd = req.cwd;
    const ch = conn.open(open);
    let resolveExit!: (v: { exit_code: number; signal?: string }) => void;
    let rejectExit!: (e: Error) => void;
    const exited = new Promise<{ exit_code: number; signal?: string }>((res, rej) => {
      resolveExit = res;
      rejectExit = rej;
    });
    exited.catch(() => {});
    const stream = channelDuplex(ch);
    return new Promise<AgentPty>((resolve, reject) => {
      let started = false;
      ch.onCtrl = (m) => {
        if (m.started !== true) return;
        started = true;
        resolve({
          stream,
          pid: Number(m.pid),
          resize: (rows, cols) => ch.sendCtrl({ resize: { rows, cols } }),
          signal: (name) => ch.sendCtrl({ signal: name }),
          exited,
        });
      };
      const exitHook = ch.onExit;
      ch.onExit = (m) => {
        exitHook(m);
        if (!started) {
          reject(agentError({ error: m.error ?? "pty failed", code: m.code ?? "EINVAL" }));
          return;
        }
        const r: { exit_code: number; signal?: string } = {
          exit_code: typeof m.exit_code === "number" ? m.exit_code : -1,
        };
        if (typeof m.signal === "string") r.signal = m.signal;
        resolveExit(r);
      };
      const closeHook = ch.onClose;
      ch.onClose = (err) => {
        closeHook(err);
        if (err) {
          reject(err);
          rejectExit(err);
        }
      };
    });
  }

  /** Streams a guest file. Rejects with AgentError (code "ENOENT", "EISDIR" …). */
  async readFile(path: string): Promise<{ stat: { size: number; mode: number }; body: Readable }> {
    const conn = await this.session();
    const ch = conn.open({ op: "file_read", path });
    let body: Readable | undefined;
    return new Promise((resolve, reject) => {
      ch.onCtrl = (m) => {
        if (typeof m.size !== "number") return;
        body = channelReadable(ch);
        resolve({ stat: { size: m.size, mode: Number(m.mode ?? 0) }, body });
      };
      const exitHook = ch.onExit;
      ch.onExit = (m) => {
        exitHook(m);
        if (typeof m.error === "string") {
          const err = agentError(m);
          if (body) body.destroy(err);
          else reject(err);
        }
      };
      const closeHook = ch.onClose;
      ch.onClose = (err) => {
        closeHook(err);
        if (err && !body) reject(err);
      };
    });
  }

  /** Writes `body` to a guest file atomically (temp file + fsync + rename), creating parent dirs. */
  async writeFile(path: string, body: Readable, mode?: number): Promise<{ bytes: number }> {
    const conn = await this.session();
    const open: Json = { op: "file_write", path, mkdirs: true };
    if (mode !== undefined) open.mode = mode;
    const ch = conn.open(open);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        reject(e);
      };
      ch.onCtrl = (m) => {
        if (m.ready !== true) return;
        const sink = new Writable({
          highWaterMark: DATA_CHUNK,
          write(chunk: Buffer, _enc, cb) {
            ch.sendData(chunk).then(() => cb(), cb);
          },
          final(cb) {
            ch.sendEof();
            cb();
          },
        });
        pipeline(body, sink, (err) => {
          if (err && !ch.closed) {
            ch.sendCtrl({ cancel: true });
            fail(err);
          }
        });
      };
      ch.onExit = (m) => {
        if (typeof m.error === "string") fail(agentError(m));
        else if (!settled) {
          settled = true;
          resolve({ bytes: Number(m.bytes ?? 0) });
        }
      };
      ch.onClose = (err) => {
        if (err) fail(err);
      };
    });
  }

  /** A byte stream to host:port inside the guest; end() half-closes, EOF from the guest ends reads. */
  async connectTcp(port: number, host = "127.0.0.1"): Promise<Duplex> {
    const conn = await this.session();
    const ch = conn.open({ op: "tcp", port, host });
    return new Promise((resolve, reject) => {
      let stream: Duplex | undefined;
      ch.onCtrl = (m) => {
        if (m.connected !== true) return;
        stream = channelDuplex(ch);
        resolve(stream);
      };
      const exitHook = ch.onExit;
      ch.onExit = (m) => {
        exitHook(m);
        if (!stream) reject(agentError(typeof m.error === "string" ? m : { error: "tcp failed" }));
        else if (typeof m.error === "string") stream.destroy(agentError(m));
      };
      const closeHook = ch.onClose;
      ch.onClose = (err) => {
        closeHook(err);
        if (err && !stream) reject(err);
      };
    });
  }
}

/** Feeds exec stdin (a Buffer or a stream) into the channel, then EOF. */
function pipeIn(ch: Channel, src: Buffer | Readable): void {
  if (Buffer.isBuffer(src)) {
    ch.sendData(src).then(
      () => ch.sendEof(),
      () => {},
    );
    return;
  }
  const sink = new Writable({
    highWaterMark: DATA_CHUNK,
    write(chunk: Buffer, _enc, cb) {
      ch.sendData(chunk).then(
        () => cb(),
        (e: Error) => cb(e),
      );
    },
    final(cb) {
      ch.sendEof();
      cb();
    },
  });
  pipeline(src, sink, () => {});
}

/** Agent→host data as a Readable; credit is granted back as the consumer drains it. */
function channelReadable(ch: Channel): Readable {
  const r = new Readable({
    highWaterMark: DATA_CHUNK,
    read() {
      ch.consumed(r.readableLength);
    },
    destroy(err, cb) {
      if (!ch.closed) ch.sendCtrl({ cancel: true });
      cb(err);
    },
  });
  wireInbound(ch, r);
  return r;
}

/** A channel as a Duplex (PTY, TCP): writes are credit-limited STDIN, end() sends EOF. */
function channelDuplex(ch: Channel): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: DATA_CHUNK,
    writableHighWaterMark: DATA_CHUNK,
    read() {
      ch.consumed(d.readableLength);
    },
    write(chunk: Buffer, _enc, cb) {
      ch.sendData(chunk).then(
        () => cb(),
        (e: Error) => cb(e),
      );
    },
    final(cb) {
      ch.sendEof();
      cb();
    },
    destroy(err, cb) {
      if (!ch.closed) ch.sendCtrl({ cancel: true });
      cb(err);
    },
  });
  wireInbound(ch, d);
  return d;
}

function wireInbound(ch: Channel, r: Readable): void {
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    r.push(null);
  };
  ch.onData = (_kind, data) => {
    if (r.destroyed) return;
    r.push(data);
    ch.consumed(r.readableLength);
  };
  ch.onEof = end;
  ch.onExit = () => end();
  ch.onClose = (err) => {
    if (err) r.destroy(err);
    else end();
  };
}
