/**
 * The logger's contract (log.ts): one JSON object per line with `msg` first after level and time, credentials
 * redacted, request lines serialised late but in order, each stamped with the time of its event.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import fc from "fast-check";
import { createLogger } from "../log.js";

function capture(compiled = true) {
  const lines: string[] = [];
  const log = createLogger(
    (s) => {
      for (const l of s.split("\n")) if (l !== "") lines.push(l);
    },
    { compiled },
  );
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe("logger", () => {
  it("writes level, time and msg first, then the fields", () => {
    const { log, lines } = capture();
    log.info("listening", { port: 8080 });
    assert.equal(lines.length, 1);
    assert.match(
      lines[0]!,
      /^\{"level":"info","ts":"\d{4}-\d\d-\d\dT[^"]+Z","msg":"listening","port":8080\}$/,
    );
  });

  it("redacts credential-like keys in either case, on every level and on request lines", () => {
    const { log, parsed } = capture();
    log.warn("w", { token: "t1", "x-api-key": "k1", SECRET: "s1", envs: { A: "1" }, ok: "yes" });
    log.request({ msg: "request", authorization: "Bearer b1", status: 200 });
    log.flush();
    const [w, r] = parsed();
    assert.deepEqual(w, {
      ...w,
      token: "[redacted]",
      "x-api-key": "[redacted]",
      SECRET: "[redacted]",
      envs: "[redacted]",
      ok: "yes",
    });
    assert.equal(r!.authorization, "[redacted]");
    assert.equal(r!.status, 200);
    assert.doesNotMatch(JSON.stringify(parsed()), /t1|k1|s1|b1|"A"/);
  });

  it("keeps request lines in order with other lines, stamped with the time of their event", async () => {
    const { log, parsed } = capture();
    const before = Date.now();
    log.request({ msg: "request", n: 1 });
    log.request({ msg: "request", n: 2 });
    await sleep(5);
    assert.equal(parsed().length, 0, "request lines wait to be serialised");
    log.error("boom");
    const lines = parsed();
    assert.deepEqual(
      lines.map((l) => l.n ?? l.msg),
      [1, 2, "boom"],
    );
    const at = (l: Record<string, unknown>) => Date.parse(l.ts as string);
    assert.ok(at(lines[0]!) >= before && at(lines[0]!) <= before + 2, "the request's own time");
    assert.ok(at(lines[2]!) - at(lines[0]!) >= 4, "the later line's time is later");
  });

  it("writes waiting request lines within 20 ms without another line", async () => {
    const { log, parsed } = capture();
    log.request({ msg: "request", n: 1 });
    await sleep(60);
    assert.deepEqual(
      parsed().map((l) => [l.msg, l.n]),
      [["request", 1]],
    );
  });

  it("writes a request line of the usual shape as pino writes it, and any other through pino", () => {
    // Strings with quotes, backslashes, control characters, Latin-1 (as node decodes a URL's bytes) and
    // astral characters; lone surrogates are left out (pino writes them raw, the JSON escape writes \\u…).
    const text = fc.oneof(
      fc.string({ unit: "binary-ascii", maxLength: 60 }),
      fc.string({ unit: "grapheme", maxLength: 60 }),
      fc.string({
        unit: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
        maxLength: 130,
      }),
    );
    const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
    const line = fc.record(
      {
        req_id: text,
        method: fc.constantFrom("GET", "POST", "DELETE"),
        route: text,
        path: text,
        status: fc.integer({ min: 100, max: 599 }),
        ms: fc.double({ noNaN: true, noDefaultInfinity: true }),
        user_id: opt(text),
        aborted: opt(fc.boolean()),
        sandbox_id: opt(text),
        exit_code: opt(fc.integer({ min: -1, max: 255 })),
        // Not of the usual shape: through pino on both sides.
        extra: opt(fc.oneof(text, fc.constant(null), fc.object())),
      },
      { requiredKeys: ["req_id", "method", "route", "path", "status", "ms"] },
    );
    const stripTs = (l: string) => l.replace(/"ts":"[^"]+"/, "");
    fc.assert(
      fc.property(fc.array(line, { minLength: 1, maxLength: 5 }), (ls) => {
        const [fast, slow] = [capture(true), capture(false)];
        for (const l of ls) {
          fast.log.request({ msg: "request", ...l });
          slow.log.request({ msg: "request", ...l });
        }
        fast.log.flush();
        slow.log.flush();
        assert.deepEqual(fast.lines.map(stripTs), slow.lines.map(stripTs));
      }),
      { numRuns: 500 },
    );
  });

  it("sends a request line out of the usual order or with an odd value through pino, redacted", () => {
    const { log, lines } = capture();
    log.request({ msg: "request", status: 200, req_id: "r1" });
    log.request({ msg: "request", req_id: "r2", status: 200.5, ms: Number.NaN });
    log.request({ msg: "request", req_id: "r3", sandbox_id: "sb-1", token: "t1" });
    log.flush();
    assert.match(lines[0]!, /"msg":"request","status":200,"req_id":"r1"\}$/);
    assert.match(lines[1]!, /"req_id":"r2","status":200.5,"ms":null\}$/);
    assert.match(lines[2]!, /"req_id":"r3","sandbox_id":"sb-1","token":"\[redacted\]"\}$/);
  });
});
