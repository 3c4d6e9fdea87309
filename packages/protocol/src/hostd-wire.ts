/**
 * The host-daemon protocol on the wire: how `HostDaemon` (./hostd.ts) crosses a network. Both sides
 * import this file, so a route, a frame type or an error status exists in one place. The prose contract,
 * with examples, is packages/protocol/HOSTD-PROTOCOL.md.
 *
 * - Plain calls (info, create, pause …): `POST /v1/call/<method>` with the argument list as a JSON
 *   array; 200 with `{"result": …}` or an error status with `{"error": {"code", "message"}}`.
 * - Long work with progress (ensureImage): a POST whose response is NDJSON lines.
 * - Files: `GET`/`PUT /v1/files?sandbox_id=&path=[&mode=]` with the bytes as the HTTP body.
 * - Events: `GET /v1/events`, an NDJSON response that stays open.
 * - Exec, PTY and TCP tunnels: an HTTP/1.1 upgrade to {@link HOSTD_UPGRADE}, then length-prefixed frames
 *   both ways. The first frame is the request; closing the connection cancels (an exec is killed, a
 *   PTY or tunnel closed). Backpressure is TCP's: a side that stops reading stops the other's writes.
 */
import { Duplex, Transform } from "node:stream";
import { HostdError, type HostdErrorCode } from "./hostd.js";

export const HOSTD_UPGRADE = "createos-hostd-stream/1";

/**
 * The request of an upgraded stream, base64url JSON, when it fits: the daemon then opens the stream before
 * it answers 101 (a refusal is a plain HTTP error), saving the round trip of a REQUEST frame and OPEN.
 */
export const HOSTD_REQUEST_HEADER = "x-hostd-request";
/** Larger requests (long argv, big env) go as the REQUEST frame instead. */
export const MAX_REQUEST_HEADER = 8 * 1024;

export const HOSTD_ROUTES = {
  call: "/v1/call/",
  ensureImage: "/v1/ensure-image",
  files: "/v1/files",
  events: "/v1/events",
  exec: "/v1/exec",
  pty: "/v1/pty",
  tcp: "/v1/tcp",
} as const;

/** Methods carried as one JSON request and one JSON response. */
export const HOSTD_CALLS = [
  "info",
  "images",
  "create",
  "pause",
  "resume",
  "fork",
  "destroy",
  "deleteSnapshot",
  "listSnapshots",
  "resizeDisk",
  "mountDisk",
  "unmountDisk",
  "diskStatus",
  "setDiskCredentials",
  "setEgress",
  "takeNetUsage",
  "setBandwidth",
  "setNetworks",
  "list",
  "commitImage",
  "deleteImage",
] as const;
export type HostdCall = (typeof HOSTD_CALLS)[number];

/** HTTP status per engine error code; the code itself travels in the body, so this is for humans and proxies. */
export const HOSTD_ERROR_STATUS: Record<HostdErrorCode, number> = {
  not_found: 404,
  conflict: 409,
  bad_request: 400,
  file_not_found: 404,
  too_large: 413,
  capacity: 507,
  not_ready: 503,
  agent_unreachable: 504,
  unreachable: 502,
  unauthorized: 401,
  busy: 429,
  internal: 500,
};

const CODES = new Set(Object.keys(HOSTD_ERROR_STATUS));

export interface WireError {
  error: { code: HostdErrorCode; message: string };
}

/** The wire form of any error: HostdErrors keep their code, everything else is `internal`. */
export function toWireError(e: unknown): WireError {
  if (e && typeof e === "object" && (e as Error).name === "HostdError") {
    const he = e as HostdError;
    return { error: { code: he.code, message: he.message } };
  }
  return { error: { code: "internal", message: e instanceof Error ? e.message : String(e) } };
}

/** Back from the wire: an unknown code (a newer peer) degrades to `internal` rather than failing to parse. */
export function fromWireError(body: unknown, fallback: string): HostdError {
  const err = (body as Partial<WireError> | undefined)?.error;
  if (err && typeof err.message === "string") {
    const code = CODES.has(err.code) ? err.code : "internal";
    return new HostdError(code, err.message);
  }
  return new HostdError("internal", fallback);
}

// ── frames ────────────────────────────────────────────────────────────────────────────────────────

/** WireFrame types of an upgraded stream. Client → host below 0x10, host → client from 0x10. */
export const F = {
  /** First frame from the client: the request as JSON. */
  REQUEST: 0x00,
  /** exec stdin, PTY input, tunnel bytes toward the guest. */
  IN: 0x01,
  /** End of IN (half-close). */
  IN_EOF: 0x02,
  /** PTY window size, JSON `{rows, cols}`. */
  RESIZE: 0x03,
  /** PTY signal, JSON `{name}`. */
  SIGNAL: 0x04,
  /** exec: kill the process group, then answer RESULT as usual (closing the connection also kills it). */
  CANCEL: 0x05,
  /** The host accepted the request (the VM exists and the stream is open); payload JSON, may be `{}`. */
  OPEN: 0x10,
  /** exec stdout, PTY output, tunnel bytes from the guest. */
  OUT: 0x11,
  /** exec stderr. */
  ERR: 0x12,
  /** End of OUT (half-close). */
  OUT_EOF: 0x13,
  /** Final result as JSON (exec: ExecResult; PTY: exit status). Last frame. */
  RESULT: 0x14,
  /** The request failed, JSON {@link WireError}. Last frame. */
  ERROR: 0x1f,
} as const;

/** A frame's header: type (1 byte) and payload length (4 bytes, big-endian). */
export const FRAME_HEADER = 5;
/** Larger frames are a protocol error: a peer cannot make the other buffer without bound. */
export const MAX_FRAME = 1 << 20;

export interface WireFrame {
  type: number;
  payload: Buffer;
}

export function encodeWireFrame(type: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : payload;
  if (body.length > MAX_FRAME) throw new RangeError(`frame of ${body.length} bytes exceeds ${MAX_FRAME}`);
  const head = Buffer.allocUnsafe(FRAME_HEADER);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Incremental decoder: feed any split of the byte stream, get whole frames. */
export class WireFrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): WireFrame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: WireFrame[] = [];
    while (this.buf.length >= FRAME_HEADER) {
      const len = this.buf.readUInt32BE(1);
      if (len > MAX_FRAME) throw new HostdError("bad_request", `frame of ${len} bytes exceeds ${MAX_FRAME}`);
      if (this.buf.length < FRAME_HEADER + len) break;
      out.push({ type: this.buf[0]!, payload: this.buf.subarray(FRAME_HEADER, FRAME_HEADER + len) });
      this.buf = this.buf.subarray(FRAME_HEADER + len);
    }
    return out;
  }
}

/**
 * Frames over a socket, with the socket's flow control exposed: `send` resolves once the kernel took the
 * bytes (or the socket buffer has room), and `pause()`/`resume()` stop and restart reading it.
 */
export class FrameConn {
  private readonly decoder = new WireFrameDecoder();
  /** Frames that arrived before anyone asked for them (bytes behind the 101 answer, say): kept, in order. */
  private early: WireFrame[] = [];
  private handler: (f: WireFrame) => void = (f) => this.early.push(f);
  private closedP: Promise<void>;
  closed = false;

  constructor(readonly socket: Duplex) {
    this.closedP = new Promise((resolve) => {
      const done = () => {
        this.closed = true;
        resolve();
      };
      socket.once("close", done);
      socket.once("error", done);
    });
    // Half-close is carried by frames (IN_EOF/OUT_EOF), so a TCP-level end means the peer is done with the
    // whole exchange: end ours too, and the connection closes once both are flushed.
    socket.once("end", () => socket.end());
    socket.on("data", (chunk: Buffer) => {
      let frames: WireFrame[];
      try {
        frames = this.decoder.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const f of frames) this.handler(f);
    });
  }

  onFrame(h: (f: WireFrame) => void): void {
    this.handler = h;
    const early = this.early;
    this.early = [];
    for (const f of early) this.handler(f);
  }

  /**
   * Writes one frame (split when larger than {@link MAX_FRAME}, all parts written at once so concurrent
   * senders never interleave them). Resolves when more may be written: the socket drained, or closed.
   */
  async send(type: number, payload?: Buffer | string): Promise<void> {
    if (this.closed || this.socket.destroyed) return;
    const body = typeof payload === "string" ? Buffer.from(payload) : (payload ?? Buffer.alloc(0));
    let ok = true;
    let off = 0;
    do {
      ok = this.socket.write(encodeWireFrame(type, body.subarray(off, off + MAX_FRAME)));
      off += MAX_FRAME;
    } while (off < body.length);
    if (!ok) await Promise.race([new Promise((r) => this.socket.once("drain", r)), this.closedP]);
  }

  sendJson(type: number, value: unknown): Promise<void> {
    return this.send(type, JSON.stringify(value));
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  whenClosed(): Promise<void> {
    return this.closedP;
  }

  /** Ends our side once everything queued is written; the peer's end closes the connection. */
  close(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function parseJson<T>(payload: Buffer): T {
  return JSON.parse(payload.toString("utf8")) as T;
}

/**
 * A byte stream carried by frames of `conn`: its writes become `tx.data` frames (the write callback waits
 * for the socket to drain, so a slow peer slows the writer) and its end a `tx.eof` frame; `rx.data` frames
 * are pushed to its readable side, pausing the socket while the reader is behind; `rx.eof` ends it. Other
 * frame types go to `other`. The connection closing destroys the stream.
 */
export function framedDuplex(
  conn: FrameConn,
  rx: { data: number; eof: number },
  tx: { data: number; eof: number },
  other: (f: WireFrame) => void = () => undefined,
): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    // Ending both directions is not the end of the exchange (a RESULT frame may follow): the connection's
    // close destroys the stream, not the stream's own ends.
    autoDestroy: false,
    read() {
      conn.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      conn.send(tx.data, chunk).then(() => cb(), cb);
    },
    final(cb) {
      conn.send(tx.eof).then(() => cb(), cb);
    },
    destroy(err, cb) {
      // A clean destroy flushes what is queued and says goodbye; an error drops the connection.
      if (err) conn.destroy();
      else conn.close();
      cb(err);
    },
  });
  let gotEof = false;
  conn.onFrame((f) => {
    if (f.type === rx.data) {
      if (!d.push(f.payload)) conn.pause();
    } else if (f.type === rx.eof) {
      gotEof = true;
      d.push(null);
    } else other(f);
  });
  void conn.whenClosed().then(() => {
    if (d.destroyed) return;
    // A clean end already pushed must still reach the reader; only then is the stream done.
    if (gotEof && !d.readableEnded) d.once("end", () => d.destroy());
    else d.destroy();
  });
  return d;
}

/**
 * Joins two byte streams both ways with backpressure; an end on one side half-closes the other. Resolves
 * when both directions ended, or either side failed or closed early (then both are destroyed).
 */
export function splice(a: Duplex, b: Duplex): Promise<void> {
  return new Promise((resolve) => {
    let open = 2;
    let done = false;
    const stop = () => {
      if (done) return;
      done = true;
      a.destroy();
      b.destroy();
      resolve();
    };
    const directionDone = () => {
      if (--open === 0) stop();
    };
    a.pipe(b).once("finish", directionDone);
    b.pipe(a).once("finish", directionDone);
    for (const s of [a, b]) {
      s.once("error", stop);
      // A stream that closes after both its ends is done, not failed: the other direction may still be
      // writing its last frame.
      s.once("close", () => {
        if (!(s.readableEnded && s.writableFinished)) stop();
      });
    }
  });
}

/**
 * Re-cuts a byte stream into chunks of `size` (the last may be shorter). Bytes from a socket arrive in
 * reads of ~64 KiB; the guest agent moves files in frames of up to DATA_CHUNK, and under emulation every
 * frame costs the guest a wake-up and a write, so uploads that crossed a network are re-cut before they
 * reach the agent (measured: 26 → 35 MB/s for 64 MiB under TCG).
 */
export function rechunk(size: number): Transform {
  let parts: Buffer[] = [];
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      n += chunk.length;
      if (n >= size) {
        const all = Buffer.concat(parts, n);
        let off = 0;
        for (; all.length - off >= size; off += size) this.push(all.subarray(off, off + size));
        parts = off < all.length ? [all.subarray(off)] : [];
        n = all.length - off;
      }
      cb();
    },
    flush(cb) {
      if (n) this.push(Buffer.concat(parts, n));
      cb();
    },
  });
}
