import assert from "node:assert/strict";
import { test } from "node:test";
import { OutboundRefused, guardedLookup, outboundRefusal, refuseLiteral } from "./outbound.js";

const none = { privateEgress: [] };
const here = ["127.0.0.1", "192.0.2.10", "203.0.113.7", "2001:4860::77"];

test("public addresses pass; private, reserved, local and special ones are refused unless listed", () => {
  for (const ip of ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::1"])
    assert.equal(outboundRefusal(ip, none, here), undefined, ip);
  const refused: [string, RegExp][] = [
    ["169.254.169.254", /range 169\.254\.0\.0\/16/],
    ["10.1.2.3", /range 10\.0\.0\.0\/8/],
    ["127.0.0.53", /range 127\.0\.0\.0\/8/],
    ["100.100.100.200", /range 100\.64\.0\.0\/10/],
    ["0.0.0.0", /range 0\.0\.0\.0\/8/],
    ["203.0.113.7", /of this machine/],
    ["::1", /not a public IPv6/],
    ["::", /not a public IPv6/],
    ["fe80::1", /not a public IPv6/],
    ["fd00:ec2::254", /not a public IPv6/],
    ["::ffff:127.0.0.1", /not a public IPv6/],
    ["::ffff:7f00:1", /not a public IPv6/],
    ["64:ff9b::a9fe:a9fe", /not a public IPv6/],
    ["2002:a9fe:a9fe::1", /not a public IPv6/],
    ["2001::1", /not a public IPv6/],
    ["2001:db8::1", /not a public IPv6/],
    ["ff02::1", /not a public IPv6/],
    ["2001:4860::77", /not a public IPv6/],
  ];
  for (const [ip, why] of refused) assert.match(outboundRefusal(ip, none, here) ?? "", why, ip);
  const lan = { privateEgress: ["10.1.0.0/16", "127.0.0.1/32"], never: ["10.1.9.0/24"] };
  assert.equal(outboundRefusal("10.1.2.3", lan, here), undefined, "listed");
  assert.equal(outboundRefusal("127.0.0.1", lan, here), undefined, "a listed address of this machine");
  assert.match(outboundRefusal("10.2.0.1", lan, here) ?? "", /range 10\.0\.0\.0\/8/, "beside the listed");
  assert.match(outboundRefusal("10.1.9.1", lan, here) ?? "", /platform's own/, "never beats listed");
  assert.match(outboundRefusal("not-an-ip", none, here) ?? "", /not an IP address/);
});

test("a literal endpoint host is checked as it is; a name is left to the lookup", () => {
  const e = refuseLiteral("[::1]", none);
  assert.ok(e instanceof OutboundRefused);
  assert.equal(e.address, "::1");
  assert.equal(e.code, "ERR_OUTBOUND_REFUSED");
  assert.equal(refuseLiteral("s3.example.com", none), undefined);
  assert.equal(refuseLiteral("8.8.8.8", none, here), undefined);
});

test("the lookup keeps only allowed addresses and fails when none is left", async () => {
  const look = (rules: { privateEgress: string[] }, all: boolean) =>
    new Promise<unknown>((resolve, reject) =>
      guardedLookup(rules, () => here)("localhost", { all }, (err, address, family) =>
        err ? reject(err) : resolve(all ? address : { address, family }),
      ),
    );
  await assert.rejects(look(none, false), (e: unknown) => {
    assert.ok(e instanceof OutboundRefused);
    assert.match(e.message, /^localhost is at 127\.0\.0\.1, an address of this machine/);
    return true;
  });
  assert.deepEqual(await look({ privateEgress: ["127.0.0.1/32"] }, false), {
    address: "127.0.0.1",
    family: 4,
  });
  assert.deepEqual(await look({ privateEgress: ["127.0.0.1/32"] }, true), [
    { address: "127.0.0.1", family: 4 },
  ]);
});
