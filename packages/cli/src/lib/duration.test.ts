import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatDuration, parseAutoPause, parseDuration } from "./duration.js";

describe("parseDuration", () => {
  it("converts Go-style durations to whole seconds", () => {
    assert.equal(parseDuration("90s"), 90);
    assert.equal(parseDuration("10m"), 600);
    assert.equal(parseDuration("1h30m"), 5400);
    assert.equal(parseDuration("1h"), 3600);
    assert.equal(parseDuration("1.5h"), 5400);
    assert.equal(parseDuration("2m30s"), 150);
    assert.equal(parseDuration("1500ms"), 2);
    assert.equal(parseDuration("120"), 120);
  });

  it("rejects what is not a duration", () => {
    for (const bad of ["", "m", "10x", "1h 30m", "ten minutes", "-5m", "5m!"]) {
      assert.equal(parseDuration(bad), undefined, bad);
    }
  });
});

describe("parseAutoPause", () => {
  it("accepts 60 s to 24 h", () => {
    assert.deepEqual(parseAutoPause("1m"), { kind: "seconds", seconds: 60 });
    assert.deepEqual(parseAutoPause("24h"), { kind: "seconds", seconds: 86400 });
    assert.deepEqual(parseAutoPause("30m"), { kind: "seconds", seconds: 1800 });
  });

  it("turns off with off/disable/false/no", () => {
    for (const w of ["off", "disable", "false", "no", "OFF"])
      assert.deepEqual(parseAutoPause(w), { kind: "off" });
  });

  it("explains out-of-range and malformed values", () => {
    assert.match(parseAutoPause("59s") as string, /between 1m and 24h/);
    assert.match(parseAutoPause("25h") as string, /between 1m and 24h/);
    assert.match(parseAutoPause("soon") as string, /invalid duration "soon"/);
  });
});

describe("formatDuration", () => {
  it("prints compact Go-style text", () => {
    assert.equal(formatDuration(5400), "1h30m");
    assert.equal(formatDuration(600), "10m");
    assert.equal(formatDuration(90), "1m30s");
    assert.equal(formatDuration(0), "0s");
  });
});
