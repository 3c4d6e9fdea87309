import assert from "node:assert/strict";
import { test } from "node:test";
import { meterScript, parseCounters, parseRecentDenied, quotaExhausted } from "./meter.js";

const HEAD = `table inet createos_meter {
  counter tx {
  }
  counter rx {
  }
  chain forward {
    type filter hook forward priority filter + 10; policy accept;
  }
  chain input {
    type filter hook input priority filter + 10; policy accept;
  }
  chain output {
    type filter hook output priority filter + 10; policy accept;
  }
}
flush chain inet createos_meter forward
flush chain inet createos_meter input
flush chain inet createos_meter output
add quota inet createos_meter cap { over 0 bytes }
delete quota inet createos_meter cap
add rule inet createos_meter forward oifname "ov*" accept
add rule inet createos_meter forward iifname "ov*" accept
`;

test("a metered sandbox: quota first, then the counters (golden)", () => {
  assert.equal(
    meterScript(1048576),
    `${HEAD}add quota inet createos_meter cap { over 1048576 bytes }
add rule inet createos_meter forward iifname "tap0" quota name cap drop
add rule inet createos_meter input iifname "tap0" quota name cap drop
add rule inet createos_meter forward iifname "tap0" counter name tx
add rule inet createos_meter forward oifname "tap0" counter name rx
add rule inet createos_meter input iifname "tap0" counter name tx
add rule inet createos_meter output oifname "tap0" counter name rx
`,
  );
});

test("unmetered: counters only; nothing left means nothing more gets out", () => {
  assert.equal(
    meterScript(-1),
    `${HEAD}add rule inet createos_meter forward iifname "tap0" counter name tx
add rule inet createos_meter forward oifname "tap0" counter name rx
add rule inet createos_meter input iifname "tap0" counter name tx
add rule inet createos_meter output oifname "tap0" counter name rx
`,
  );
  assert.match(meterScript(0), /cap \{ over 0 bytes \}\nadd rule .* quota name cap drop/);
});

test("counters from nft's JSON", () => {
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      { counter: { family: "inet", name: "tx", table: "createos_meter", handle: 1, packets: 3, bytes: 180 } },
      { counter: { family: "inet", name: "rx", table: "createos_meter", handle: 2, packets: 1, bytes: 60 } },
    ],
  });
  assert.deepEqual(
    [...parseCounters(json)],
    [
      ["tx", { bytes: 180, packets: 3 }],
      ["rx", { bytes: 60, packets: 1 }],
    ],
  );
});

test("the quota is used up once its bytes are", () => {
  const q = (used: number) =>
    JSON.stringify({
      nftables: [{ metainfo: {} }, { quota: { name: "cap", bytes: 1000, used, inv: true } }],
    });
  assert.equal(quotaExhausted(q(999)), false);
  assert.equal(quotaExhausted(q(1000)), true);
  assert.equal(quotaExhausted(JSON.stringify({ nftables: [{ metainfo: {} }] })), false, "no quota");
});

test("recent_denied: nft's JSON of the set, the last refused (longest to live) first", () => {
  // `nft -j list set inet createos_egress recent_denied` as nft 1.0.6 prints it (an ICMP refusal has port 0)
  const json = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6", release_name: "Lester Gooch #5", json_schema_version: 1 } },
      {
        set: {
          family: "inet",
          name: "recent_denied",
          table: "createos_egress",
          type: ["ipv4_addr", "inet_proto", "inet_service"],
          handle: 2,
          size: 64,
          flags: ["timeout"],
          timeout: 600,
          elem: [
            { elem: { val: { concat: ["10.99.0.9", "tcp", 22] }, expires: 590 } },
            { elem: { val: { concat: ["10.99.0.7", "icmp", 0] }, expires: 599 } },
            { elem: { val: { concat: ["10.99.0.8", "udp", 5353] }, timeout: 600, expires: 12 } },
            { elem: { val: { concat: ["10.99.0.6", 132, 0] }, expires: 400 } },
            { elem: { val: "not a concatenation" } },
          ],
        },
      },
    ],
  });
  assert.deepEqual(parseRecentDenied(json), [
    { ip: "10.99.0.7", proto: "icmp", port: 0, expires_in_s: 599 },
    { ip: "10.99.0.9", proto: "tcp", port: 22, expires_in_s: 590 },
    { ip: "10.99.0.6", proto: "132", port: 0, expires_in_s: 400 },
    { ip: "10.99.0.8", proto: "udp", port: 5353, expires_in_s: 12 },
  ]);
  // an empty set has no `elem` at all
  assert.deepEqual(parseRecentDenied('{"nftables":[{"set":{"name":"recent_denied"}}]}'), []);
});
