/**
 * Keyless PTY over `POST /v1/sandboxes/{id}/shell` (protocol.md §3.4). Client→server bytes are
 * framed `[type:1][len:4 BE][payload]` (0x00 data ≤4 KiB, 0x01 resize rows/cols u16 BE); the
 * server→client direction is raw PTY output.
 */
import type net from "node:net";
import { SHELL_FRAME_DATA, SHELL_FRAME_RESIZE, SHELL_MAX_DATA_FRAME } from "@createos-sandbox/protocol/api";
import { CreateosSandboxError } from "./errors.js";
import type { ShellOptions, ShellSession } from "./types.js";

export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + payload.length);
  frame.writeUInt8(type, 0);
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return frame;
}

/** Data frames of at most 4 KiB payload each (empty input → no frames). */
export function encodeDataFrames(data: string | Uint8Array): Buffer[] {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const frames: Buffer[] = [];
  for (let off = 0; off < bytes.length; off += SHELL_MAX_DATA_FRAME) {
    frames.push(encodeFrame(SHELL_FRAME_DATA, bytes.subarray(off, off + SHELL_MAX_DATA_FRAME)));
  }
  return frames;
}

export function encodeResizeFrame(rows: number, cols: number): Buffer {
  for (const [name, v] of [
    ["rows", rows],
    ["cols", cols],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 0xffff) {
      throw new CreateosSandboxError(`Invalid terminal ${name}: ${v}. Must be an integer in 1-65535.`);
    }
  }
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt16BE(rows, 0);
  payload.writeUInt16BE(cols, 2);
  return encodeFrame(SHELL_FRAME_RESIZE, payload);
}

/** Grace for the server to close after we end our side, before the socket is torn down. */
const CLOSE_GRACE_MS = 2_000;

/** Wraps an upgraded socket as a ShellSession (exported for tests with a scripted peer). */
export function shellSession(socket: net.Socket, options: ShellOptions = {}): ShellSession {
  const listeners = new Set<(chunk: Buffer) => void>();
  // Output that arrives before anyone listens (the prompt usually does) is kept for the first subscriber.
  let backlog: Buffer[] = [];
  let open = true;
  const { stdin, stdout } = options;

  const deliver = (chunk: Buffer) => {
    if (stdout) stdout.write(chunk);
    if (listeners.size === 0) {
      if (!stdout) backlog.push(chunk);
      return;
    }
    for (const l of listeners) l(chunk);
  };

  const closed = new Promise<void>((resolve) => {
    socket.on("close", () => {
      open = false;
      if (stdin) stdin.removeListener("data", onStdin);
      resolve();
    });
  });
  // Errors end the session; `closed` still settles via "close".
  socket.on("error", () => undefined);
  socket.on("data", deliver);
  socket.on("end", () => socket.end());

  const send = (buf: Buffer) => {
    if (open && !socket.destroyed && socket.writable) socket.write(buf);
  };
  const write = (data: string | Uint8Array) => {
    for (const frame of encodeDataFrames(data)) send(frame);
  };
  const onStdin = (chunk: string | Buffer) => write(chunk);

  send(encodeResizeFrame(options.rows ?? 24, options.cols ?? 80));
  if (stdin) stdin.on("data", onStdin);
  socket.resume();

  const session: ShellSession = {
    write,
    resize(rows: number, cols: number) {
      send(encodeResizeFrame(rows, cols));
    },
    close() {
      if (!open) return;
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    },
    onData(listener) {
      listeners.add(listener);
      if (backlog.length > 0) {
        const pending = backlog;
        backlog = [];
        for (const chunk of pending) listener(chunk);
      }
      return () => {
        listeners.delete(listener);
      };
    },
    closed,
  };
  // The signal that bounded the handshake also ends the session.
  if (options.signal) {
    const onAbort = () => session.close();
    options.signal.addEventListener("abort", onAbort, { once: true });
    void closed.then(() => options.signal?.removeEventListener("abort", onAbort));
  }
  return session;
}
