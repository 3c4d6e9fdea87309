import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";
import {
  AGENT_ERROR_CODES,
  DATA_CHUNK,
  FrameDecoder,
  FrameKind,
  GRANT_BATCH,
  INITIAL_WINDOW,
  MAX_PAYLOAD,
  encodeFrame,
  encodeWindow,
  isAgentErrorCode,
  isFrameKind,
  windowValue,
} from "./agentwire.js";

interface GoldenFrame {
  name?: string;
  kind: number;
  flags: number;
  channel: number;
  payload_hex: string;
  hex?: string;
}
interface Golden {
  frames: GoldenFrame[];
  streams: { name: string; hex: string; frames: GoldenFrame[]; resyncs: number; buffered: number }[];
}

// Same relative path from src/ and dist/.
const golden = JSON.parse(
  readFileSync(new URL("../../agent/testdata/frames.json", import.meta.url), "utf8"),
) as Golden;

test("golden vectors are present", () => {
  assert.ok(golden.frames.length >= 8);
  assert.ok(golden.streams.length >= 8);
});

test("encode matches the Go encoder's golden bytes", () => {
  for (const f of golden.frames) {
    assert.ok(isFrameKind(f.kind), f.name);
    const got = encodeFrame(f.kind, f.channel, Buffer.from(f.payload_hex, "hex"), f.flags);
    assert.equal(got.toString("hex"), f.hex, f.name);
  }
});

test("decode golden streams whole, byte by byte and in odd chunks", () => {
  for (const s of golden.streams) {
    const raw = Buffer.from(s.hex, "hex");
    const splits: [string, Buffer[]][] = [
      ["whole", [raw]],
      ["bytes", [...raw].map((b) => Buffer.from([b]))],
      ["7s", Array.from({ length: Math.ceil(raw.length / 7) }, (_, i) => raw.subarray(i * 7, i * 7 + 7))],
    ];
    for (const [how, chunks] of splits) {
      const d = new FrameDecoder();
      const got = chunks.flatMap((c) => d.push(c));
      assert.deepEqual(
        got.map((f) => ({ kind: f.kind, channel: f.channel, payload_hex: f.payload.toString("hex") })),
        s.frames.map((f) => ({ kind: f.kind, channel: f.channel, payload_hex: f.payload_hex })),
        `${s.name} (${how})`,
      );
      assert.equal(d.resyncs, s.resyncs, `${s.name} (${how}) resyncs`);
      assert.equal(d.buffered, s.buffered, `${s.name} (${how}) buffered`);
    }
  }
});

test("window frames round-trip", () => {
  const d = new FrameDecoder();
  const [f] = d.push(encodeWindow(3, 262144));
  assert.equal(f?.kind, FrameKind.WINDOW);
  assert.equal(windowValue(f!.payload), 262144);
  assert.equal(encodeWindow(5, 1 << 18).toString("hex"), "c50a0800000000050000000400040000");
});

test("a 1 MiB payload is accepted, one byte more is refused", () => {
  const d = new FrameDecoder();
  const big = Buffer.alloc(MAX_PAYLOAD, 7);
  const frames = d.push(encodeFrame(FrameKind.STDOUT, 1, big));
  assert.equal(frames.length, 1);
  assert.equal(frames[0]?.payload.length, MAX_PAYLOAD);
  assert.throws(() => encodeFrame(FrameKind.STDOUT, 1, Buffer.alloc(MAX_PAYLOAD + 1)), RangeError);
});

test("large frames split into many chunks decode without quadratic copying", () => {
  const d = new FrameDecoder();
  const payload = Buffer.alloc(MAX_PAYLOAD, 1);
  const wire = Buffer.concat(
    Array.from({ length: 32 }, (_, i) => encodeFrame(FrameKind.STDOUT, i + 1, payload)),
  );
  const t0 = performance.now();
  let n = 0;
  for (let off = 0; off < wire.length; off += 1500) n += d.push(wire.subarray(off, off + 1500)).length;
  const ms = performance.now() - t0;
  assert.equal(n, 32);
  assert.equal(d.resyncs, 0);
  // 32 MiB in MTU-sized chunks; a quadratic join would take seconds.
  assert.ok(ms < 3000, `took ${ms} ms`);
});

test("every errno name the Go agent sends is a known AgentErrorCode", () => {
  // Same relative path from src/ and dist/.
  const dir = new URL("../../agent/internal/server/", import.meta.url);
  const sent = new Set<string>();
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(".go") || name.endsWith("_test.go")) continue;
    for (const m of readFileSync(new URL(name, dir), "utf8").matchAll(/"(E[A-Z]{2,})"/g)) sent.add(m[1]!);
  }
  assert.ok(sent.has("ENOENT") && sent.has("ENOSYS"), [...sent].join(" "));
  for (const code of sent) assert.ok(isAgentErrorCode(code), `${code} missing from AGENT_ERROR_CODES`);
  assert.equal(new Set(AGENT_ERROR_CODES).size, AGENT_ERROR_CODES.length);
  assert.equal(isAgentErrorCode("toString"), false);
});

test("data frames fit the window and a grant batch", () => {
  assert.ok(DATA_CHUNK <= MAX_PAYLOAD);
  assert.ok(DATA_CHUNK <= GRANT_BATCH);
  assert.ok(GRANT_BATCH < INITIAL_WINDOW);
});
