import assert from "node:assert/strict";
import { test } from "node:test";
import { EgressRuleError, cidrWithin, egressPolicy, normaliseCidr, parseEgressRule } from "./egress.js";

test("every rule form parses to what it allows", () => {
  assert.deepEqual(parseEgressRule("pypi.org"), { name: "pypi.org", subdomains: false });
  assert.deepEqual(parseEgressRule("*.GitHub.com"), { name: "github.com", subdomains: true });
  assert.deepEqual(parseEgressRule("db.example.com:5432"), {
    name: "db.example.com",
    subdomains: false,
    port: 5432,
  });
  assert.deepEqual(parseEgressRule("1.2.3.4"), { cidr: "1.2.3.4/32" });
  assert.deepEqual(parseEgressRule("1.2.3.4:443"), { cidr: "1.2.3.4/32", port: 443 });
  assert.deepEqual(parseEgressRule("8.8.4.0/22"), { cidr: "8.8.4.0/22" });
  assert.deepEqual(parseEgressRule("8.8.7.9/22:53"), { cidr: "8.8.4.0/22", port: 53 });
  assert.equal(parseEgressRule("*"), null);
  assert.equal(parseEgressRule("[2001:db8::1]:443"), undefined);
  assert.equal(parseEgressRule("2001:db8::/32"), undefined);
});

test("a bad rule is refused with its text in the message", () => {
  for (const bad of [
    "",
    " pypi.org",
    "pypi.org:0",
    "pypi.org:65536",
    "pypi.org:http",
    "a..b",
    "-a.com",
    "*.",
    "**.a.com",
    "a.*.com",
    "1.2.3.4/33",
    "1.2.3.256",
    "1.2.3",
    "a:b:c",
    "[::1",
    "[zz]:1",
    "x".repeat(301),
  ]) {
    assert.throws(
      () => parseEgressRule(bad),
      (e: unknown) => e instanceof EgressRuleError && e.message.includes(JSON.stringify(bad.slice(0, 100))),
      bad,
    );
  }
});

test("private ranges only when the operator lists them", () => {
  assert.throws(
    () => parseEgressRule("10.1.2.3"),
    /private range 10\.0\.0\.0\/8.*CREATEOS_SANDBOX_PRIVATE_EGRESS/,
  );
  assert.throws(() => parseEgressRule("192.168.1.0/24:80"), /192\.168\.0\.0\/16/);
  assert.throws(() => parseEgressRule("169.254.169.254"), /169\.254\.0\.0\/16/);
  assert.deepEqual(parseEgressRule("10.77.1.2:80", ["10.77.0.0/16"]), { cidr: "10.77.1.2/32", port: 80 });
  assert.throws(() => parseEgressRule("10.78.1.2", ["10.77.0.0/16"]), /private range/);
  // wider than any private range: accepted, the private parts stay refused by the firewall
  assert.deepEqual(parseEgressRule("0.0.0.0/0"), { cidr: "0.0.0.0/0" });
});

test("lists: empty, null and any `*` allow all; anything else is exactly its rules", () => {
  assert.deepEqual(egressPolicy([]), { all: true });
  assert.deepEqual(egressPolicy(null), { all: true });
  assert.deepEqual(egressPolicy(undefined), { all: true });
  assert.deepEqual(egressPolicy(["pypi.org", "*"]), { all: true });
  assert.deepEqual(egressPolicy(["pypi.org", "1.1.1.1:53", "[::1]"]), {
    all: false,
    nets: [{ cidr: "1.1.1.1/32", port: 53 }],
    names: [{ name: "pypi.org", subdomains: false }],
  });
  assert.throws(() => egressPolicy(["pypi.org", "bad rule"]), /"bad rule"/);
});

test("cidr helpers", () => {
  assert.equal(normaliseCidr("10.1.2.3/8"), "10.0.0.0/8");
  assert.equal(normaliseCidr("10.1.2.3"), "10.1.2.3/32");
  assert.equal(normaliseCidr("10.1.2"), undefined);
  assert.ok(cidrWithin("10.1.0.0/16", "10.0.0.0/8"));
  assert.ok(!cidrWithin("10.0.0.0/8", "10.1.0.0/16"));
  assert.ok(!cidrWithin("11.0.0.0/8", "10.0.0.0/8"));
});
