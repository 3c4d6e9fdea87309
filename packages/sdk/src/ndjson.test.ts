import assert from "node:assert/strict";
import { test } from "node:test";
import { NdjsonParser, parseNdjsonLine, readNdjson } from "./ndjson.js";

const enc = (s: string) => new TextEncoder().encode(s);

test("parseNdjsonLine skips blanks, comments, SSE control lines and malformed JSON", () => {
  assert.equal(parseNdjsonLine(""), undefined);
  assert.equal(parseNdjsonLine("   \r"), undefined);
  assert.equal(parseNdjsonLine(": keep-alive"), undefined);
  assert.equal(parseNdjsonLine("event: message"), undefined);
  assert.equal(parseNdjsonLine("id: 7"), undefined);
  assert.equal(parseNdjsonLine("retry: 1000"), undefined);
  assert.equal(parseNdjsonLine("{not json"), undefined);
  assert.equal(parseNdjsonLine("42"), undefined);
  assert.equal(parseNdjsonLine("[1,2]"), undefined);
  assert.deepEqual(parseNdjsonLine('{"stdout":"a"}\r'), { stdout: "a" });
  assert.deepEqual(parseNdjsonLine('data: {"exit_code":0}'), { exit_code: 0 });
  assert.deepEqual(parseNdjsonLine('data:{"hb":true}'), { hb: true });
});

test("frames split at arbitrary byte boundaries, including inside a UTF-8 character", () => {
  const text = '{"stdout":"héllo ✓"}\n\n{"stderr":"x"}\n{"exit_code":3}\n';
  const bytes = enc(text);
  for (let size = 1; size <= 7; size++) {
    const p = new NdjsonParser();
    const frames: unknown[] = [];
    for (let i = 0; i < bytes.length; i += size) frames.push(...p.push(bytes.subarray(i, i + size)));
    frames.push(...p.end());
    assert.deepEqual(
      frames,
      [{ stdout: "héllo ✓" }, { stderr: "x" }, { exit_code: 3 }],
      `chunk size ${size}`,
    );
  }
});

test("a final line without newline is flushed by end()", () => {
  const p = new NdjsonParser();
  assert.deepEqual(p.push(enc('{"a":1}\n{"b":2}')), [{ a: 1 }]);
  assert.deepEqual(p.end(), [{ b: 2 }]);
});

test("oversize lines are dropped without losing the following frames", () => {
  const p = new NdjsonParser(32);
  const big = `{"stdout":"${"x".repeat(100)}"}`;
  const frames = [
    ...p.push(enc('{"a":1}\n')),
    ...p.push(enc(big.slice(0, 50))),
    ...p.push(enc(`${big.slice(50)}\n{"b":2}\n`)),
    ...p.end(),
  ];
  assert.deepEqual(frames, [{ a: 1 }, { b: 2 }]);
  assert.equal(p.oversizeLines, 1);
});

test("the default limit accepts a line of almost 4 MiB", () => {
  const p = new NdjsonParser();
  const payload = "y".repeat(4 * 1024 * 1024 - 20);
  const frames = [...p.push(enc(`{"stdout":"${payload}"}\n`)), ...p.end()];
  assert.equal(frames.length, 1);
  assert.equal((frames[0] as { stdout: string }).stdout.length, payload.length);
});

test("readNdjson yields frames and cancels the body when the consumer stops early", async () => {
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(enc('{"stdout":"1"}\n{"stdout":"2"}\n'));
    },
    cancel() {
      cancelled = true;
    },
  });
  const seen: unknown[] = [];
  for await (const f of readNdjson(body)) {
    seen.push(f);
    break;
  }
  assert.deepEqual(seen, [{ stdout: "1" }]);
  assert.equal(cancelled, true);
});
