/** Pure pieces: ids, the state machine table, input grammars. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { NEXT, canTransition, plan } from "../state.js";
import { canonicalSandboxId, newSandboxId, ulid } from "../ulid.js";
import { canonicalSshKey, checkEnvs, egressRuleError, mergeSshKeys } from "../validate.js";
import { ED25519 } from "./helpers.js";

test("ulid: 26 Crockford chars, time-ordered; sandbox ids lower-case and sb_ accepted", () => {
  const a = ulid(1_700_000_000_000);
  const b = ulid(1_700_000_000_001);
  assert.match(a, /^[0-9A-HJKMNP-TV-Z]{26}$/);
  assert.ok(a.slice(0, 10) < b.slice(0, 10));
  assert.equal(ulid(0).slice(0, 10), "0000000000");
  assert.equal(ulid(2 ** 48 - 1).slice(0, 10), "7ZZZZZZZZZ");
  const id = newSandboxId();
  assert.match(id, /^sb-[0-9a-z]{26}$/);
  assert.equal(canonicalSandboxId(id.replace("sb-", "sb_").toUpperCase().replace("SB_", "sb_")), id);
  assert.equal(canonicalSandboxId("sb-short"), undefined);
  const many = new Set(Array.from({ length: 1000 }, () => newSandboxId()));
  assert.equal(many.size, 1000);
});

test("state machine: user actions follow the transition table", () => {
  for (const [from, tos] of Object.entries(NEXT))
    for (const to of tos) assert.ok(canTransition(from as never, to));
  assert.deepEqual(plan("pause", "running"), { kind: "go", from: ["running"], to: "pausing" });
  assert.equal(plan("pause", "paused").kind, "noop");
  for (const s of [
    "creating",
    "pausing",
    "resuming",
    "forking",
    "destroying",
    "destroyed",
    "error",
    "failed",
  ] as const) {
    assert.equal(plan("pause", s).kind, "conflict", s);
  }
  assert.equal(plan("resume", "running").kind, "noop");
  assert.equal(plan("resume", "paused").kind, "go");
  assert.equal(plan("resume", "pausing").kind, "conflict");
  assert.equal(plan("fork", "pausing").kind, "wait");
  assert.equal(plan("fork", "running").kind, "conflict");
  assert.equal(plan("destroy", "destroyed").kind, "noop");
  assert.equal(plan("runtime", "paused").kind, "conflict");
  // Every "go" lands on a status the table allows from each source.
  for (const action of ["pause", "resume", "destroy"] as const) {
    for (const s of Object.keys(NEXT) as (keyof typeof NEXT)[]) {
      const p = plan(action, s);
      if (p.kind === "go")
        for (const f of p.from) assert.ok(canTransition(f, p.to), `${action}: ${f}→${p.to}`);
    }
  }
});

test("egress grammar", () => {
  for (const ok of [
    "*",
    "example.com",
    "api.example.com:443",
    "*.example.com",
    "*.example.com:8443",
    "10.0.0.1",
    "10.0.0.1:53",
    "10.0.0.0/8",
    "10.0.0.0/8:443",
    "fd00::1",
    "fd00::/8",
    "[fd00::1]:443",
    "localhost",
  ]) {
    assert.equal(egressRuleError(ok), undefined, ok);
  }
  for (const bad of [
    "",
    " x.com",
    "x..com",
    "x.com:0",
    "x.com:70000",
    "10.0.0.0/33",
    "1.2.3.4/8/9",
    "a b",
    "*.",
    "**.x.com",
    "http://x.com",
    "-x.com",
    "[1.2.3.4]:80",
  ]) {
    assert.ok(egressRuleError(bad), bad);
  }
});

test("ssh keys are validated, canonicalised and deduplicated", () => {
  assert.ok(canonicalSshKey(ED25519));
  assert.equal(canonicalSshKey("ssh-ed25519 AAAA"), undefined);
  assert.equal(
    canonicalSshKey("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"),
    undefined,
  );
  const spaced = ED25519.replace(" ", "   ");
  const merged = mergeSshKeys([ED25519], [spaced, ED25519.replace("test@example", "other")]);
  assert.deepEqual(merged, [ED25519]);
});

test("env limits", () => {
  assert.equal(checkEnvs({ A: "1", _b2: "x" }, "envs"), undefined);
  assert.ok(checkEnvs({ "A-B": "1" }, "envs"));
  assert.ok(checkEnvs({ A: 1 }, "envs"));
  assert.ok(checkEnvs(["A"], "envs"));
  const big: Record<string, string> = {};
  for (let i = 0; i < 20; i++) big[`K${i}`] = "x".repeat(4000);
  assert.match(checkEnvs(big, "envs") ?? "", /in total/);
});
