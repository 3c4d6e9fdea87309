import assert from "node:assert/strict";
import { test } from "node:test";
import {
  F,
  HOSTD_ERROR_STATUS,
  MAX_FRAME,
  WireFrameDecoder,
  encodeWireFrame,
  fromWireError,
  toWireError,
} from "./hostd-wire.js";
import { HostdError } from "./hostd.js";

test("frames are type, big-endian length, payload (HOSTD-PROTOCOL.md's example)", () => {
  assert.equal(encodeWireFrame(F.OPEN, "{}").toString("hex"), "10000000027b7d");
  assert.equal(encodeWireFrame(F.OUT, "hi\n").toString("hex"), "110000000368690a");
  assert.equal(encodeWireFrame(F.IN_EOF).toString("hex"), "0200000000");
});

test("the decoder yields whole frames from any split of the stream", () => {
  const stream = Buffer.concat([
    encodeWireFrame(F.REQUEST, JSON.stringify({ argv: ["echo", "hi"] })),
    encodeWireFrame(F.IN, Buffer.from([0, 255, 10])),
    encodeWireFrame(F.IN_EOF),
  ]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new WireFrameDecoder();
    const frames = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    assert.deepEqual(
      frames.map((f) => [f.type, f.payload.toString("hex")]),
      [
        [F.REQUEST, Buffer.from('{"argv":["echo","hi"]}').toString("hex")],
        [F.IN, "00ff0a"],
        [F.IN_EOF, ""],
      ],
    );
  }
});

test("a frame over the limit is refused on both sides", () => {
  assert.throws(() => encodeWireFrame(F.OUT, Buffer.alloc(MAX_FRAME + 1)), RangeError);
  const head = Buffer.from([F.OUT, 0, 0x10, 0, 1]);
  assert.throws(
    () => new WireFrameDecoder().push(head),
    (e) => (e as HostdError).code === "bad_request",
  );
});

test("errors keep their code across the wire; unknown codes degrade to internal", () => {
  const back = fromWireError(toWireError(new HostdError("file_not_found", "/x does not exist")), "?");
  assert.equal(back.code, "file_not_found");
  assert.equal(back.message, "/x does not exist");
  assert.equal(fromWireError({ error: { code: "from_the_future", message: "m" } }, "?").code, "internal");
  assert.equal(fromWireError("garbage", "fallback").message, "fallback");
  assert.equal(toWireError(new Error("plain")).error.code, "internal");
  for (const status of Object.values(HOSTD_ERROR_STATUS)) assert.ok(status >= 400 && status < 600);
});

test("rechunk re-cuts any split of a stream into whole chunks, the remainder last", async () => {
  const { Readable } = await import("node:stream");
  const { rechunk } = await import("./hostd-wire.js");
  const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => i & 255));
  for (const piece of [1, 7, 64, 300, 1000]) {
    const parts: Buffer[] = [];
    for (let i = 0; i < data.length; i += piece) parts.push(data.subarray(i, i + piece));
    // Collected as 'data' events, as a pipe() sees them (an async iterator would merge buffered chunks).
    const out: Buffer[] = [];
    const r = Readable.from(parts).pipe(rechunk(128));
    r.on("data", (c: Buffer) => out.push(c));
    await new Promise((res) => r.once("end", res));
    assert.deepEqual(Buffer.concat(out), data);
    assert.deepEqual(
      out.map((c) => c.length),
      [...Array(7).fill(128), 104],
    );
  }
});
