/**
 * Frame codec of the host ↔ guest agent protocol (packages/agent/PROTOCOL.md): a 12-byte big-endian
 * header (magic C5 0A, kind, flags, channel u32, payload length u32) and a payload of at most 1 MiB.
 * The Go twin is packages/agent/internal/wire; both are checked against packages/agent/testdata/frames.json.
 */

export const MAGIC0 = 0xc5;
export const MAGIC1 = 0x0a;
export const HEADER_LEN = 12;
export const MAX_PAYLOAD = 1 << 20;
/** Credit each direction of a data channel starts with (bytes of STDIN, or of STDOUT+STDERR). */
export const INITIAL_WINDOW = 1 << 20;
/** Consumed bytes a receiver collects before granting them back with WINDOW. */
export const GRANT_BATCH = 256 << 10;
export const CONTROL_CHANNEL = 0;
/** Largest data frame a sender cuts its byte stream into (any size up to MAX_PAYLOAD is valid). */
export const DATA_CHUNK = 256 << 10;
/** The protocol version `hello` asks for. */
export const AGENT_PROTOCOL_VERSION = 1;

export const FrameKind = {
  OPEN: 0x01,
  STDIN: 0x02,
  STDOUT: 0x03,
  STDERR: 0x04,
  EOF: 0x05,
  EXIT: 0x06,
  CTRL: 0x07,
  WINDOW: 0x08,
  RPC: 0x09,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const KIND_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(FrameKind).map(([name, value]) => [value, name]),
);

export function kindName(kind: number): string {
  return KIND_NAMES[kind] ?? `0x${kind.toString(16)}`;
}

export function isFrameKind(kind: number): kind is FrameKind {
  return kind >= FrameKind.OPEN && kind <= FrameKind.RPC;
}

export interface Frame {
  kind: FrameKind;
  flags: number;
  channel: number;
  payload: Buffer;
}

/** Header and payload in one buffer: one write per frame, so concurrent senders never interleave. */
export function encodeFrame(
  kind: FrameKind,
  channel: number,
  payload: Uint8Array = EMPTY,
  flags = 0,
): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`frame payload ${payload.length} > ${MAX_PAYLOAD}`);
  if (!Number.isInteger(channel) || channel < 0 || channel > 0xffffffff)
    throw new RangeError("bad channel id");
  const b = Buffer.allocUnsafe(HEADER_LEN + payload.length);
  b[0] = MAGIC0;
  b[1] = MAGIC1;
  b[2] = kind;
  b[3] = flags;
  b.writeUInt32BE(channel, 4);
  b.writeUInt32BE(payload.length, 8);
  b.set(payload, HEADER_LEN);
  return b;
}

export function encodeJson(kind: FrameKind, channel: number, value: unknown): Buffer {
  return encodeFrame(kind, channel, Buffer.from(JSON.stringify(value)));
}

export function encodeWindow(channel: number, credit: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(credit >>> 0, 0);
  return encodeFrame(FrameKind.WINDOW, channel, p);
}

/** A WINDOW payload's credit; a short payload grants nothing. */
export function windowValue(payload: Buffer): number {
  return payload.length >= 4 ? payload.readUInt32BE(0) : 0;
}

const EMPTY = Buffer.alloc(0);

/**
 * Streaming decoder: feed it chunks in any split, get frames out. A header with a bad magic, an
 * unknown kind or an oversized length makes it discard bytes up to the next magic (a snapshot
 * restore can cut a frame in half); each run of discarded bytes between good frames is one resync.
 * Chunks are kept as a list and joined once per frame, so a 1 MiB frame in 64 KiB reads costs one copy.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private total = 0;
  private discarding = false;
  resyncs = 0;

  get buffered(): number {
    return this.total;
  }

  push(chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(
        Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length),
      );
      this.total += chunk.length;
    }
    const out: Frame[] = [];
    for (;;) {
      if (this.total === 0) break;
      const head = this.peek(Math.min(HEADER_LEN, this.total));
      if (head[0] !== MAGIC0 || (head.length >= 2 && head[1] !== MAGIC1)) {
        this.skip();
        continue;
      }
      if (head.length < HEADER_LEN) break;
      const kind = head[2]!;
      const len = head.readUInt32BE(8);
      if (!isFrameKind(kind) || len > MAX_PAYLOAD) {
        this.skip();
        continue;
      }
      if (this.total < HEADER_LEN + len) break;
      const whole = this.take(HEADER_LEN + len);
      out.push({
        kind,
        flags: whole[3]!,
        channel: whole.readUInt32BE(4),
        payload: whole.subarray(HEADER_LEN),
      });
      this.discarding = false;
    }
    return out;
  }

  /** The first n (≤ total) bytes, joining chunks only when the first one is too short. */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const joined = Buffer.concat(this.chunks, this.total);
    this.chunks = [joined];
    return joined.subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const head = this.chunks[0]!;
    if (head.length === n) this.chunks.shift();
    else this.chunks[0] = head.subarray(n);
    this.total -= n;
    return first;
  }

  /** Drop the first byte and everything before the next possible magic. */
  private skip(): void {
    if (!this.discarding) {
      this.discarding = true;
      this.resyncs++;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.total);
    let i = 1;
    for (; i < all.length; i++) {
      if (all[i] === MAGIC0 && (i + 1 === all.length || all[i + 1] === MAGIC1)) break;
    }
    const rest = all.subarray(i);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.total = rest.length;
  }
}

// ---- JSON payloads (PROTOCOL.md "OPEN requests", "CTRL messages", "RPC on channel 0") ----

/** errno names the agent reports as `code`; a newer agent may send others (treat those as EIO). */
export const AGENT_ERROR_CODES = [
  "ENOENT",
  "ENOTDIR",
  "EISDIR",
  "EINVAL",
  "EACCES",
  "EROFS",
  "EEXIST",
  "ENOSPC",
  "ECONNREFUSED",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EMFILE",
  "EIO",
  "ECANCELED",
  "ENOSYS",
] as const;
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

export function isAgentErrorCode(code: string): code is AgentErrorCode {
  return (AGENT_ERROR_CODES as readonly string[]).includes(code);
}

export interface PtySize {
  rows: number;
  cols: number;
}

/** OPEN of a process; `stdin: false` (default) gives it /dev/null, `pty` a controlling terminal. */
export interface ExecOpen {
  op: "exec";
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: boolean;
  pty?: PtySize;
}
export interface FileReadOpen {
  op: "file_read";
  path: string;
}
export interface FileWriteOpen {
  op: "file_write";
  path: string;
  mode?: number;
  mkdirs?: boolean;
}
export interface TcpOpen {
  op: "tcp";
  port: number;
  host?: string;
}
export type OpenRequest = ExecOpen | FileReadOpen | FileWriteOpen | TcpOpen;

/** CTRL host→agent. */
export type HostCtrl = { signal: string } | { resize: PtySize } | { cancel: true };

/** CTRL agent→host, one per operation kind, right after OPEN. */
export interface ExecStarted {
  started: true;
  pid: number;
  /** fork+exec time measured by the agent, µs. */
  spawn_us?: number;
}
export interface FileReadStat {
  size: number;
  /** Permission bits plus setuid/setgid/sticky. */
  mode: number;
}
export interface FileWriteReady {
  ready: true;
}
export interface TcpConnected {
  connected: true;
}

/** EXIT of an operation that failed (could not start, or was cancelled). */
export interface ErrorExit {
  error: string;
  code?: string;
}
/** EXIT of an exec: `error` (exit_code -1) when it could not start. */
export interface ExecExit {
  exit_code: number;
  signal?: string;
  error?: string;
  /** OPEN received → exit seen and all output sent, µs. */
  wall_us?: number;
}
/** EXIT of file_read, file_write and tcp when they succeeded. */
export interface OkExit {
  ok: true;
  bytes?: number;
}

/** A channel-0 request; `id` pairs it with its response. */
export interface RpcRequest {
  id: number;
  method: string;
  params: object;
}
export interface RpcError {
  message: string;
  code: string;
}
export interface RpcResponse {
  id: number;
  result?: Record<string, unknown>;
  error?: RpcError;
}

/**
 * `hello`'s params. The identity fields are configure's (ConfigureParams): a new agent applies them before
 * it answers, so a restore needs no second round trip; an older agent ignores them and answers without
 * `configured`, and the host then sends configure (or sync) as before.
 */
export interface HelloParams extends ConfigureParams {
  version: number;
}
export interface HelloResult {
  version: number;
  agent: string;
  boot_id: string;
  uptime_ms: number;
  pid: number;
  /** Problems the agent found in its guest at boot (e.g. no timer interrupts); absent when none. */
  warnings?: string[];
  /** Present when the hello carried an identity: true once applied, false with `configure_error`. */
  configured?: boolean;
  configure_error?: RpcError;
  /** As sync's, when the hello carried a clock. */
  skew_ms?: number;
  /** How long applying the identity took inside the guest, µs. */
  configure_us?: number;
}

export interface ConfigureParams {
  hostname?: string;
  /** Sandbox-wide env given to every exec (replaces the previous set). Secrets: never logged. */
  envs?: Record<string, string>;
  /** Host wall clock, ns since the epoch. */
  time_ns?: number;
  /** 64 random bytes, base64. */
  entropy?: string;
  net?: { dns?: string[] };
}

export interface SyncParams {
  time_ns?: number;
  entropy?: string;
}
export interface SyncResult {
  ok: true;
  /** How far the guest clock was off before it was set, ms (host − guest). */
  skew_ms: number;
}

export interface ResizeFsParams {
  device: string;
}
export interface ResizeFsResult {
  ok: true;
  size_bytes: number;
  skipped?: boolean;
}

export interface AgentStats {
  open_channels: number;
  resyncs: number;
  mem_available_kib: number;
  load1: number;
  orphans_reaped?: number;
}

export interface ShutdownParams {
  reboot: boolean;
}

/** An event from the agent: "ready" (boot_id) after boot and on every connect, "self" (action, reason). */
export interface AgentEvent {
  event: string;
  boot_id?: string;
  action?: "pause" | "delete";
  reason?: string;
}
