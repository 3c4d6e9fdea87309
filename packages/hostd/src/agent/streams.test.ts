/**
 * Channel streams against a fake Mux that records what the host sends: exact control of which frames
 * arrive when, to pin cancel-on-destroy, credit grants and error EXITs after a stream opened.
 */
import assert from "node:assert/strict";
import type { Duplex, Readable } from "node:stream";
import { test } from "node:test";
import {
  type Frame,
  FrameDecoder,
  FrameKind,
  HostdError,
  INITIAL_WINDOW,
  encodeJson,
  windowValue,
} from "@createos-sandbox/protocol";
import { Channel, type Mux, parseJson } from "./channel.js";
import { exec } from "./exec.js";
import { readFile } from "./files.js";
import { channelDuplex, channelReadable } from "./streams.js";
import { connectTcp } from "./tcp.js";

/** A channel on a fake Mux; `sent()` decodes every frame the host wrote so far. */
function fakeChannel(): { ch: Channel; sent: () => Frame[] } {
  const out: Buffer[] = [];
  const mux = {
    channels: new Map<number, Channel>(),
    write: (b: Buffer) => {
      out.push(b);
      return true;
    },
    drained: () => Promise.resolve(),
  };
  const ch = new Channel(mux as unknown as Mux, 1);
  mux.channels.set(1, ch);
  return { ch, sent: () => new FrameDecoder().push(Buffer.concat(out)) };
}

function frame(kind: FrameKind, payload: Buffer = Buffer.alloc(0)): Frame {
  return { kind, flags: 0, channel: 1, payload };
}

const json = (kind: FrameKind, v: unknown) => frame(kind, encodeJson(kind, 1, v).subarray(12));
const cancels = (sent: Frame[]) =>
  sent.filter((f) => f.kind === FrameKind.CTRL && parseJson(f.payload).cancel === true).length;
const granted = (sent: Frame[]) =>
  sent.filter((f) => f.kind === FrameKind.WINDOW).reduce((n, f) => n + windowValue(f.payload), 0);
const tick = () => new Promise((r) => setImmediate(r));

async function finished(d: Duplex): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    d.once("close", resolve);
    d.once("error", reject);
  });
}

test("duplex: the guest half-closes first, the host writes and ends: no cancel", async () => {
  const { ch, sent } = fakeChannel();
  const d = channelDuplex(ch);
  const closed = finished(d);
  d.on("data", () => {});
  ch.handle(frame(FrameKind.STDOUT, Buffer.from("greeting")));
  ch.handle(frame(FrameKind.EOF));
  await new Promise((r) => d.once("end", r));
  d.end("reply");
  await closed;
  assert.equal(cancels(sent()), 0, "a normal finish must not cancel: the agent would drop the reply");
  assert.deepEqual(
    sent().map((f) => f.kind),
    [FrameKind.WINDOW, FrameKind.STDIN, FrameKind.EOF],
  );
});

test("duplex: the host half-closes first, then the guest answers and ends: no cancel", async () => {
  const { ch, sent } = fakeChannel();
  const d = channelDuplex(ch);
  const closed = finished(d);
  await new Promise<void>((r) => d.end("hello", r));
  const parts: Buffer[] = [];
  d.on("data", (b: Buffer) => parts.push(b));
  ch.handle(frame(FrameKind.STDOUT, Buffer.from("HELLO")));
  ch.handle(frame(FrameKind.EOF));
  await closed;
  assert.equal(Buffer.concat(parts).toString(), "HELLO");
  assert.equal(cancels(sent()), 0);
});

test("duplex and readable: destroy() before the end still cancels, once", async () => {
  for (const make of [channelDuplex, channelReadable] as ((ch: Channel) => Readable)[]) {
    const { ch, sent } = fakeChannel();
    const s = make(ch);
    s.on("data", () => {});
    ch.handle(frame(FrameKind.STDOUT, Buffer.from("x")));
    s.destroy();
    s.destroy();
    await tick();
    assert.equal(cancels(sent()), 1);
  }
  // Even when both directions ended on the host, a destroy before the stream finished cancels.
  const { ch, sent } = fakeChannel();
  const d = channelDuplex(ch);
  d.end();
  d.destroy();
  await tick();
  assert.equal(cancels(sent()), 1);
});

test("readable: reading to the end does not cancel", async () => {
  const { ch, sent } = fakeChannel();
  const r = channelReadable(ch);
  ch.handle(frame(FrameKind.STDOUT, Buffer.from("file")));
  ch.handle(frame(FrameKind.EOF));
  assert.equal(Buffer.concat(await r.toArray()).toString(), "file");
  await tick();
  assert.equal(cancels(sent()), 0);
});

/** Delivers a full window of data in 64 KiB frames in one go, as one socket read can. */
function flood(ch: Channel, bytes: number): void {
  for (let n = 0; n < bytes; n += 64 << 10) ch.handle(frame(FrameKind.STDOUT, Buffer.alloc(64 << 10, 7)));
}

for (const mode of ["for await", "read()", "read(1000)", "'data'"] as const) {
  test(`credit: a reader using ${mode} gets the whole window granted back as it consumes`, async () => {
    const { ch, sent } = fakeChannel();
    const d = channelDuplex(ch);
    flood(ch, INITIAL_WINDOW);
    await tick();
    // Nobody read yet: nothing may be granted (backpressure), the whole window sits in the buffer.
    assert.equal(granted(sent()), 0);
    assert.equal(d.readableLength, INITIAL_WINDOW);
    let got = 0;
    if (mode === "for await") {
      for await (const b of d) {
        got += (b as Buffer).length;
        if (got === INITIAL_WINDOW) break;
      }
    } else if (mode === "'data'") {
      d.on("data", (b: Buffer) => {
        got += b.length;
      });
      await tick();
    } else {
      const size = mode === "read()" ? undefined : 1000;
      for (let b: Buffer | null = d.read(size); b !== null; b = d.read(size)) got += b.length;
      // The last partial piece: read(1000) returns null while fewer bytes remain, until the end.
      if (got < INITIAL_WINDOW) got += (d.read(d.readableLength) as Buffer).length;
    }
    assert.equal(got, INITIAL_WINDOW);
    assert.equal(granted(sent()), INITIAL_WINDOW, "every consumed byte is granted back");
    d.destroy();
  });
}

test("readFile: an error EXIT after the body opened fails the body with a HostdError", async () => {
  const { ch } = fakeChannel();
  const read = readFile(async () => ch, "/f");
  await tick();
  // All in one socket read, before the caller even has the body: it must still see the error.
  ch.handle(json(FrameKind.CTRL, { size: 10, mode: 0o644 }));
  ch.handle(frame(FrameKind.STDOUT, Buffer.from("half")));
  ch.handle(json(FrameKind.EXIT, { error: "read /f: input/output error", code: "EIO" }));
  const { body } = await read;
  await assert.rejects(body.toArray(), (e: unknown) => {
    assert.ok(e instanceof HostdError, String(e));
    assert.match(e.message, /input\/output error/);
    return true;
  });
});

test("connectTcp: an error EXIT after the tunnel opened fails the stream with a HostdError", async () => {
  const { ch } = fakeChannel();
  const conn = connectTcp(async () => ch, 80, "127.0.0.1");
  await tick();
  ch.handle(json(FrameKind.CTRL, { connected: true }));
  const s = await conn;
  ch.handle(json(FrameKind.EXIT, { error: "connection reset", code: "ECONNRESET" }));
  await assert.rejects(s.toArray(), (e: unknown) => e instanceof HostdError);
});

test("exec: credit for a chunk waits for its callback's promise; a repeated 'started' pipes stdin once", async () => {
  const { ch, sent } = fakeChannel();
  const releases: (() => void)[] = [];
  const run = exec(
    async () => ch,
    { argv: ["x"], stdin: Buffer.from("in") },
    {
      onStdout: () => new Promise<void>((r) => releases.push(r)),
    },
  );
  await tick();
  ch.handle(json(FrameKind.CTRL, { started: true, pid: 1 }));
  ch.handle(json(FrameKind.CTRL, { started: true, pid: 1 }));
  flood(ch, INITIAL_WINDOW);
  await tick();
  assert.equal(granted(sent()), 0, "nothing is granted while the consumer holds its chunk");
  assert.equal(releases.length, 1, "one chunk at a time: the rest waits until the consumer took it");
  for (let i = 0; i < 4; i++) {
    releases.shift()!();
    await tick();
  }
  assert.equal(granted(sent()), 4 * (64 << 10), "what the consumer took is granted back");
  while (releases.length > 0) {
    releases.shift()!();
    await tick();
  }
  assert.equal(granted(sent()), INITIAL_WINDOW);
  assert.equal(sent().filter((f) => f.kind === FrameKind.STDIN).length, 1, "stdin is sent once");
  ch.handle(json(FrameKind.EXIT, { exit_code: 0 }));
  assert.equal((await run).exit_code, 0);
});

test("a data frame past the granted window is an overrun (hostile.test.ts: what the Mux does then)", () => {
  const { ch } = fakeChannel();
  const overruns: Channel[] = [];
  (ch.mux as unknown as { overrun: (c: Channel) => void }).overrun = (c) => overruns.push(c);
  const r = channelReadable(ch);
  flood(ch, INITIAL_WINDOW);
  assert.deepEqual(overruns, []);
  ch.handle(frame(FrameKind.STDOUT, Buffer.alloc(1)));
  assert.deepEqual(overruns, [ch]);
  assert.equal(r.readableLength, INITIAL_WINDOW, "the overrunning bytes are not kept");
});
