/**
 * A hostile guest agent for the client's tests (not named *.test.ts: it registers no test): a separate
 * process, so the test's memory is the host's alone, serving the agent socket and breaking the protocol
 * in one of a few ways. `node hostile.js SOCKET MODE [SEED]`; it prints "listening" once it accepts.
 *
 * - flood: output of exec, file_read and tcp ignores WINDOW, 64 KiB frames as fast as the socket takes them (256 MiB a channel)
 * - repeat: an honest agent that sends every frame twice (started, data, EOF, EXIT, RPC answers)
 * - liar: file_read reports sizes no file has (path /neg, /huge, /frac) or 10 bytes and sends 64 MiB
 * - events: after hello, 200 000 self events with 1 KiB reasons
 * - mutate: answers each OPEN and RPC with golden frames of testdata/frames.json, mutated from SEED
 * - silent: answers hello and RPCs, never an OPEN
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import {
  type Frame,
  FrameDecoder,
  FrameKind,
  INITIAL_WINDOW,
  encodeFrame,
  encodeJson,
  windowValue,
} from "@createos-sandbox/protocol";

type Send = (b: Buffer) => Promise<void>;
type Json = Record<string, unknown>;

const CHUNK = 64 << 10;
const FLOOD_BYTES = 256 << 20;

/** A small seeded PRNG (mulberry32): the same seed mutates the same way. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every frame and stream of the golden vectors, as bytes. */
export function goldenFrames(): Buffer[] {
  const path = fileURLToPath(new URL("../../../agent/testdata/frames.json", import.meta.url));
  const g = JSON.parse(readFileSync(path, "utf8")) as {
    frames: { hex: string }[];
    streams: { hex: string }[];
  };
  return [...g.frames, ...g.streams].map((f) => Buffer.from(f.hex, "hex"));
}

/** One golden frame, pointed at `channel` when it has a header, then mutated: flips, cuts, stray bytes. */
export function mutated(rand: () => number, seeds: Buffer[], channel: number): Buffer {
  const b = Buffer.from(seeds[Math.floor(rand() * seeds.length)]!);
  if (b.length >= 12 && rand() < 0.7) b.writeUInt32BE(channel, 4);
  const n = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < n && b.length > 0; i++) {
    const at = Math.floor(rand() * b.length);
    const r = rand();
    if (r < 0.4) b[at] = b[at]! ^ (1 << Math.floor(rand() * 8));
    else if (r < 0.7) b[at] = Math.floor(rand() * 256);
    else if (r < 0.8 && b.length >= 12) b.writeUInt32BE(Math.floor(rand() * 2 ** 32), 8);
    else if (r < 0.9) return b.subarray(0, at);
  }
  return rand() < 0.1 ? Buffer.concat([b, b]) : b;
}

const json = (kind: FrameKind, ch: number, v: unknown) => encodeJson(kind, ch, v);

/** What each mode does with a frame from the host. `credit` is the host's WINDOW per channel. */
function handler(mode: string, send: Send, credit: Map<number, number>, seed: number): (f: Frame) => void {
  const rand = prng(seed);
  const seeds = goldenFrames();
  const twice = mode === "repeat";
  const out = async (b: Buffer) => {
    await send(b);
    if (twice) await send(b);
  };
  const rpc = (f: Frame) => {
    const m = JSON.parse(f.payload.toString()) as Json;
    if (m.method === "hello") {
      void out(json(FrameKind.RPC, 0, { id: m.id, result: { version: 1, agent: "hostile", boot_id: "x" } }));
      // After the host had the time to listen: what comes before is not the flood's point.
      if (mode === "events") setTimeout(() => void events(send), 200);
      return;
    }
    if (mode === "mutate") void garbage(send, rand, seeds, 0, 20);
    void out(json(FrameKind.RPC, 0, { id: m.id, result: { open_channels: 0 } }));
  };
  return (f) => {
    if (f.kind === FrameKind.RPC) return rpc(f);
    if (f.kind === FrameKind.WINDOW) {
      credit.set(f.channel, (credit.get(f.channel) ?? 0) + windowValue(f.payload));
      return;
    }
    if (f.kind !== FrameKind.OPEN || mode === "silent") return;
    const req = JSON.parse(f.payload.toString()) as Json;
    const ch = f.channel;
    credit.set(ch, INITIAL_WINDOW);
    if (mode === "flood") void flood(send, ch, req.op);
    else if (mode === "liar") void liar(send, credit, ch, String(req.path));
    else if (mode === "mutate") void garbage(send, rand, seeds, ch, 200);
    else if (mode === "repeat") void honest(out, req, ch);
  };
}

async function garbage(
  send: Send,
  rand: () => number,
  seeds: Buffer[],
  ch: number,
  n: number,
): Promise<void> {
  for (let i = 0; i < n; i++) await send(mutated(rand, seeds, ch));
}

/** The operation's answer to OPEN, then data that ignores WINDOW. */
async function flood(send: Send, ch: number, op: unknown): Promise<void> {
  const answer =
    op === "file_read"
      ? { size: FLOOD_BYTES, mode: 0o644 }
      : op === "tcp"
        ? { connected: true }
        : { started: true, pid: 1 };
  await send(json(FrameKind.CTRL, ch, answer));
  const data = Buffer.alloc(CHUNK, 0x41);
  for (let n = 0; n < FLOOD_BYTES; n += CHUNK) await send(encodeFrame(FrameKind.STDOUT, ch, data));
}

/** Sends `total` bytes within the host's credit, as an honest agent does. */
async function windowed(send: Send, credit: Map<number, number>, ch: number, total: number): Promise<void> {
  for (let n = 0; n < total; ) {
    const c = credit.get(ch) ?? 0;
    if (c <= 0) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    const k = Math.min(CHUNK, c, total - n);
    credit.set(ch, c - k);
    await send(encodeFrame(FrameKind.STDOUT, ch, Buffer.alloc(k, 0x42)));
    n += k;
  }
}

async function liar(send: Send, credit: Map<number, number>, ch: number, path: string): Promise<void> {
  const size = { "/neg": -1, "/huge": 2 ** 60, "/frac": 1.5 }[path] ?? 10;
  await send(json(FrameKind.CTRL, ch, { size, mode: 0o644 }));
  await windowed(send, credit, ch, 64 << 20);
  await send(encodeFrame(FrameKind.EOF, ch));
  await send(json(FrameKind.EXIT, ch, { ok: true, bytes: 64 << 20 }));
}

/** The honest answers (sent twice by `out` in repeat mode). */
async function honest(out: Send, req: Json, ch: number): Promise<void> {
  if (req.op === "exec") {
    await out(json(FrameKind.CTRL, ch, { started: true, pid: 1 }));
    await out(encodeFrame(FrameKind.STDOUT, ch, Buffer.from("hello\n")));
    await out(encodeFrame(FrameKind.EOF, ch));
    await out(json(FrameKind.EXIT, ch, { exit_code: 0 }));
  } else if (req.op === "file_read") {
    await out(json(FrameKind.CTRL, ch, { size: 4, mode: 0o644 }));
    await out(encodeFrame(FrameKind.STDOUT, ch, Buffer.from("data")));
    await out(encodeFrame(FrameKind.EOF, ch));
    await out(json(FrameKind.EXIT, ch, { ok: true, bytes: 4 }));
  } else if (req.op === "tcp") {
    await out(json(FrameKind.CTRL, ch, { connected: true }));
    await out(encodeFrame(FrameKind.EOF, ch));
    await out(json(FrameKind.EXIT, ch, { ok: true }));
  }
}

async function events(send: Send): Promise<void> {
  const reason = "r".repeat(1024);
  for (let i = 0; i < 200_000; i++)
    await send(json(FrameKind.RPC, 0, { event: "self", action: i % 2 ? "pause" : "bogus", reason }));
}

function serve(sockPath: string, mode: string, seed: number): void {
  const server = net.createServer((sock) => {
    sock.on("error", () => {});
    let closed = false;
    sock.once("close", () => {
      closed = true;
    });
    const send: Send = (b) => {
      if (closed) return Promise.resolve();
      if (sock.write(b)) return Promise.resolve();
      return new Promise((r) => {
        sock.once("drain", r);
        sock.once("close", r);
      });
    };
    const decoder = new FrameDecoder();
    const onFrame = handler(mode, send, new Map(), seed);
    sock.on("data", (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) onFrame(f);
    });
  });
  server.listen(sockPath, () => process.stderr.write("listening\n"));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  serve(process.argv[2]!, process.argv[3]!, Number(process.argv[4] ?? 1));
}
