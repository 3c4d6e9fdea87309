import assert from "node:assert/strict";
import { test } from "node:test";
import {
  autoPrivateEgress,
  egressCheck,
  refusedBecause,
  resolveHosts,
  withPackageSources,
} from "./egresscheck.js";
import { DENIED, deniedRange, inCidr } from "./firewall.js";

test("inCidr", () => {
  assert.ok(inCidr("10.1.2.3", "10.0.0.0/8"));
  assert.ok(!inCidr("11.0.0.1", "10.0.0.0/8"));
  assert.ok(inCidr("203.0.113.80", "203.0.113.80/32"));
  assert.ok(!inCidr("203.0.113.81", "203.0.113.80/32"));
  assert.ok(inCidr("8.8.8.8", "0.0.0.0/0"));
  assert.ok(inCidr("255.255.255.255", "240.0.0.0/4"));
});

test("deniedRange: the firewall's own list, IPv4 only", () => {
  assert.equal(deniedRange("203.0.113.80"), "203.0.113.0/24");
  assert.equal(deniedRange("192.88.99.1"), "192.88.99.0/24");
  assert.equal(deniedRange("151.101.2.132"), undefined);
  assert.equal(deniedRange("::1"), undefined);
  for (const c of DENIED) assert.equal(deniedRange(c.split("/")[0] ?? ""), c);
});

test("doctor names the range and the setting, and is satisfied once the address is listed", () => {
  assert.match(
    refusedBecause("203.0.113.80", [], []) ?? "",
    /203\.0\.113\.0\/24.*CREATEOS_SANDBOX_PRIVATE_EGRESS/,
  );
  assert.equal(refusedBecause("203.0.113.80", ["203.0.113.0/24"], []), undefined);
  assert.equal(refusedBecause("93.184.215.14", [], []), undefined);
  assert.match(refusedBecause("192.0.2.2", ["192.0.2.0/24"], ["192.0.2.2"]) ?? "", /address of this host/);
  assert.match(refusedBecause("10.201.0.5", ["10.0.0.0/8"], []) ?? "", /10\.201\.0\.0\/16.*never/);
  assert.match(refusedBecause("10.200.0.1", ["10.200.0.0/16"], []) ?? "", /10\.200\.0\.0\/16.*never/);
  const ips = ["203.0.113.80", "151.101.2.132", "10.1.2.3", "192.168.1.1"];
  const refused = (list: string[]) => ips.filter((ip) => refusedBecause(ip, list, []));
  assert.deepEqual(refused([]), ["203.0.113.80", "10.1.2.3", "192.168.1.1"]);
  assert.deepEqual(refused(["203.0.113.80/32", "10.0.0.0/8"]), ["192.168.1.1"]);
});

test("the package sources' refused addresses are added as /32s, nothing else", () => {
  assert.deepEqual(withPackageSources(["203.0.113.80", "203.0.113.80", "151.101.2.132"], [], []), {
    privateEgress: ["203.0.113.80/32"],
    added: ["203.0.113.80/32"],
  });
  // already covered by the explicit list: nothing added, the explicit list kept as it is
  assert.deepEqual(withPackageSources(["10.1.2.3"], ["10.0.0.0/8"], []), {
    privateEgress: ["10.0.0.0/8"],
    added: [],
  });
  // never the host's own addresses, the veths or the sandboxes; IPv6 is not routed to guests at all
  assert.deepEqual(
    withPackageSources(
      ["192.0.2.2", "10.200.0.1", "10.201.0.9", "::1", "198.51.100.7"],
      ["172.16.0.0/12"],
      ["192.0.2.2"],
    ),
    { privateEgress: ["172.16.0.0/12", "198.51.100.7/32"], added: ["198.51.100.7/32"] },
  );
  assert.deepEqual(withPackageSources([], [], []), { privateEgress: [], added: [] });
});

test("CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO=0 turns the addition off", () => {
  assert.equal(autoPrivateEgress({}), true);
  assert.equal(autoPrivateEgress({ CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO: "1" }), true);
  assert.equal(autoPrivateEgress({ CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO: "0" }), false);
});

test("doctor's guest egress: the daemon's list, and addresses only the sandbox resolver gives", () => {
  const proxy = [
    { name: "deb.debian.org", address: "203.0.113.80" },
    { name: "registry.npmjs.org", address: "203.0.113.80" },
  ];
  const base = { hostResolved: proxy, guestResolved: proxy, explicit: [], host: ["192.0.2.2"] };
  const on = egressCheck({ ...base, auto: true });
  assert.equal(on.check, "guest egress");
  assert.ok(on.ok, on.detail);
  assert.match(on.detail, /203\.0\.113\.80\/32/);
  const off = egressCheck({ ...base, auto: false });
  assert.ok(!off.ok);
  assert.match(off.detail, /deb\.debian\.org \(203\.0\.113\.80\).*CREATEOS_SANDBOX_PRIVATE_EGRESS/);
  assert.ok(egressCheck({ ...base, auto: false, explicit: ["203.0.113.0/24"] }).ok);
  // a sandbox's resolver answering differently: that address was not the host's, so it stays refused
  const other = egressCheck({
    ...base,
    auto: true,
    guestResolved: [{ name: "deb.debian.org", address: "198.51.100.7" }],
  });
  assert.ok(!other.ok);
  assert.match(other.detail, /198\.51\.100\.7/);
  assert.doesNotMatch(other.detail, /203\.0\.113\.80/);
  const self = egressCheck({ ...base, auto: true, hostResolved: [{ name: "x", address: "192.0.2.2" }] });
  assert.ok(!self.ok);
  assert.match(self.detail, /address of this host/);
  assert.ok(egressCheck({ ...base, hostResolved: [], guestResolved: [], auto: true }).ok);
});

test("resolveHosts: a name that does not resolve is left out, within the deadline", async () => {
  const t0 = Date.now();
  assert.deepEqual(await resolveHosts(["localhost", "nonexistent.invalid"], 2000), [
    { name: "localhost", address: "127.0.0.1" },
  ]);
  assert.ok(Date.now() - t0 < 2500);
});
