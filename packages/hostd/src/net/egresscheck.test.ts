import assert from "node:assert/strict";
import { test } from "node:test";
import { inCidr, refusedBecause } from "./egresscheck.js";

test("inCidr", () => {
  assert.ok(inCidr("10.1.2.3", "10.0.0.0/8"));
  assert.ok(!inCidr("11.0.0.1", "10.0.0.0/8"));
  assert.ok(inCidr("203.0.113.80", "203.0.113.80/32"));
  assert.ok(!inCidr("203.0.113.81", "203.0.113.80/32"));
  assert.ok(inCidr("8.8.8.8", "0.0.0.0/0"));
  assert.ok(inCidr("255.255.255.255", "240.0.0.0/4"));
});

test("doctor names the range and the setting, and is satisfied once the address is listed", () => {
  assert.match(
    refusedBecause("203.0.113.80", [], []) ?? "",
    /203\.0\.113\.0\/24.*CREATEOS_SANDBOX_PRIVATE_EGRESS/,
  );
  assert.equal(refusedBecause("203.0.113.80", ["203.0.113.0/24"], []), undefined);
  assert.equal(refusedBecause("93.184.215.14", [], []), undefined);
  assert.match(refusedBecause("192.0.2.2", ["192.0.2.0/24"], ["192.0.2.2"]) ?? "", /address of this host/);
});
