import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { GuestEventGate, type SelfAction } from "./guest-events.js";

const limits = { burst: 3, refillMs: 50, warnings: 2 };

function gate() {
  const got: string[] = [];
  const coalesced: number[] = [];
  const g = new GuestEventGate(
    (a: SelfAction, r) => got.push(`${a}:${r ?? ""}`),
    (n) => coalesced.push(n),
    limits,
  );
  return { g, got, coalesced };
}

test("a flood of self-signals yields the burst, then one event per refill, the latest reason kept", async () => {
  const { g, got, coalesced } = gate();
  for (let i = 0; i < 10_000; i++) g.self("pause", `n${i}`);
  assert.deepEqual(got, ["pause:n0", "pause:n1", "pause:n2"]);
  await sleep(limits.refillMs * 3);
  assert.deepEqual(got, ["pause:n0", "pause:n1", "pause:n2", "pause:n9999"]);
  assert.deepEqual(coalesced, [10_000 - 4]);
  g.close();
});

test("a pending delete is delivered before a pending pause, which it makes moot", async () => {
  const { g, got } = gate();
  for (let i = 0; i < 3; i++) g.self("pause", undefined);
  g.self("pause", "p");
  g.self("delete", "d");
  await sleep(limits.refillMs * 4);
  assert.deepEqual(got.slice(3), ["delete:d"]);
  g.close();
});

test("events spaced by the refill period all pass; a closed gate delivers nothing", async () => {
  const { g, got, coalesced } = gate();
  for (let i = 0; i < 5; i++) {
    g.self("pause", String(i));
    await sleep(limits.refillMs + 10);
  }
  assert.equal(got.length, 5);
  g.self("pause", "x");
  g.self("pause", "x");
  g.self("pause", "x");
  g.self("pause", "y");
  g.close();
  await sleep(limits.refillMs * 2);
  assert.ok(!got.includes("pause:y"));
  assert.deepEqual(coalesced, [1], "the one still pending is reported at close");
});

test("warnings: a few per window are logged, the rest counted and reported with the next window's first", async () => {
  const { g } = gate();
  const logged = Array.from({ length: 10 }, () => g.warning());
  assert.equal(logged.filter((w) => w.log).length, 2);
  await sleep(limits.refillMs * limits.burst + 20);
  assert.deepEqual(g.warning(), { log: true, suppressed: 8 });
  g.close();
});
