import assert from "node:assert/strict";
import { test } from "node:test";
import { HostdError, type OverlayMembership } from "@createos-sandbox/protocol";
import { overlayEndpoint } from "../overlay.js";
import {
  checkMemberships,
  hostsFile,
  memberMac,
  rootOverlayScript,
  sandboxOverlayScript,
} from "./overlayplan.js";

const A: OverlayMembership = {
  network_id: "net_a",
  network_name: "alpha",
  vni: 4100,
  cidr: "10.240.3.0/24",
  ip: "10.240.3.5",
  peers: [
    { sandbox_id: "sb_2", name: "web", ip: "10.240.3.6" },
    { sandbox_id: "sb_3", ip: "10.240.3.7" },
  ],
  remotes: [{ addr: "127.0.0.1", port: 4790 }],
};
const B: OverlayMembership = {
  ...A,
  network_id: "net_b",
  network_name: "beta",
  vni: 4101,
  cidr: "10.240.4.0/28",
  ip: "10.240.4.2",
  peers: [{ sandbox_id: "sb_2", name: "web", ip: "10.240.4.3" }],
  remotes: [],
};

function rejects(list: unknown, msg: RegExp) {
  assert.throws(
    () => checkMemberships(list),
    (e: unknown) => e instanceof HostdError && e.code === "bad_request" && msg.test(e.message),
    String(msg),
  );
}

test("valid memberships pass as given (a peer without a name stays without one)", () => {
  assert.deepEqual(checkMemberships([A, B]), [A, B]);
  assert.deepEqual(checkMemberships([]), []);
});

test("bad CIDRs, addresses outside them, VNIs out of range and clashes are bad_request", () => {
  rejects({}, /must be a list/);
  rejects([{ ...A, cidr: "10.240.3.0" }], /not an IPv4 CIDR/);
  rejects([{ ...A, cidr: "10.240.3.1/24" }], /host bits set/);
  rejects([{ ...A, cidr: "10.240.3.0/31" }], /not an IPv4 CIDR/);
  rejects([{ ...A, cidr: "fd00::/64" }], /not an IPv4 CIDR/);
  rejects([{ ...A, cidr: "10.201.0.0/24", ip: "10.201.0.5", peers: [] }], /overlaps 10\.200\.0\.0\/15/);
  rejects([{ ...A, cidr: "169.254.0.0/24", ip: "169.254.0.5", peers: [] }], /overlaps 169\.254/);
  rejects([{ ...A, ip: "10.240.4.5" }], /ip 10\.240\.4\.5 is not a host address/);
  rejects([{ ...A, ip: "10.240.3.0" }], /not a host address/);
  rejects([{ ...A, ip: "10.240.3.255" }], /not a host address/);
  rejects([{ ...A, ip: "nope" }], /ip must be an IPv4 address/);
  rejects([{ ...A, peers: [{ sandbox_id: "x", ip: "10.9.9.9" }] }], /peers\[0\]\.ip 10\.9\.9\.9/);
  rejects([{ ...A, vni: 0 }], /vni must be an integer from 1 to 16777215/);
  rejects([{ ...A, vni: 16777216 }], /vni/);
  rejects([{ ...A, vni: 1.5 }], /vni/);
  rejects([{ ...A, network_name: "bad name" }], /network_name must be a DNS label/);
  // A name goes into the resolver's hosts file: nothing that could add a line or another name.
  rejects([{ ...A, peers: [{ sandbox_id: "x", name: "a\n10.0.0.1 evil", ip: "10.240.3.9" }] }], /name/);
  rejects([{ ...A, remotes: [{ addr: "example.com", port: 4789 }] }], /remotes\[0\]\.addr/);
  rejects([{ ...A, remotes: [{ addr: "127.0.0.1", port: 0 }] }], /remotes\[0\]\.port/);
  rejects([A, { ...B, vni: A.vni }], /repeats a network or VNI/);
  rejects([A, { ...B, network_id: A.network_id }], /repeats/);
  rejects([A, { ...B, cidr: "10.240.0.0/16", ip: "10.240.9.1", peers: [] }], /overlaps an earlier/);
});

test("the member MAC is derived from its address", () => {
  assert.equal(memberMac("10.240.3.5"), "02:4f:0a:f0:03:05");
});

test("the sandbox namespace's overlay table (golden)", () => {
  assert.equal(
    sandboxOverlayScript([A, B]),
    `table ip createos_overlay
delete table ip createos_overlay
table ip createos_overlay {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "ov4100" ip daddr 10.240.3.5 dnat to 169.254.0.21
    iifname "ov4101" ip daddr 10.240.4.2 dnat to 169.254.0.21
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "ov4100" ip saddr 169.254.0.21 snat to 10.240.3.5
    oifname "ov4101" ip saddr 169.254.0.21 snat to 10.240.4.2
  }
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname "ov*" oifname != "tap0" drop
    oifname "ov*" iifname != "tap0" drop
    iifname "ov*" ct mark set 0x4f560000
    oifname "ov*" ct mark set 0x4f560000
    ct mark 0x4f560000 iifname != "ov*" oifname != "ov*" drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "ov*" drop
  }
}
`,
  );
});

test("the root guard of a daemon's subnets, peers and VXLAN port (golden); none left: the table goes", () => {
  const ep = { addr: "192.0.2.1", port: 4790 };
  const peer = (addr: string) => ({ addr, port: 4790 });
  // A's two members here were told different remotes (a change on its way): the union counts.
  const a1 = { ...A, remotes: [peer("192.0.2.7"), peer("192.0.2.9")] };
  const a2 = { ...A, ip: "10.240.3.6", remotes: [peer("192.0.2.7")] };
  const b = { ...B, remotes: [peer("198.51.100.4")] };
  const c = { ...B, network_id: "net_c", vni: 4102, cidr: "10.240.3.0/24", ip: "10.240.3.9" };
  assert.equal(
    rootOverlayScript("ab12cd34", [b, a1, a2, c], "csbv", ep),
    `table inet createos_overlay_ab12cd34
delete table inet createos_overlay_ab12cd34
table inet createos_overlay_ab12cd34 {
  set nets {
    type ipv4_addr; flags interval; auto-merge;
    elements = { 10.240.3.0/24, 10.240.4.0/28 }
  }
  set peers {
    type ipv4_addr; flags interval; auto-merge;
    elements = { 192.0.2.7, 192.0.2.9, 198.51.100.4 }
  }
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname "csbv*" ip daddr @nets meta l4proto tcp reject with tcp reset
    iifname "csbv*" ip daddr @nets reject with icmpx type admin-prohibited
    iifname "csbv*" ip daddr @peers meta l4proto tcp reject with tcp reset
    iifname "csbv*" ip daddr @peers reject with icmpx type admin-prohibited
    iifname "csbv*" udp dport 4790 reject with icmpx type admin-prohibited
  }
  chain input {
    type filter hook input priority filter - 5; policy accept;
    udp dport 4790 @th,96,24 4100 ip saddr != { 192.0.2.7, 192.0.2.9 } drop
    udp dport 4790 @th,96,24 4101 ip saddr != { 198.51.100.4 } drop
  }
}
`,
  );
  // A network on this host only has no VXLAN device: nothing to take, no peers to refuse.
  assert.match(
    rootOverlayScript("ab12cd34", [c], "csbv", ep),
    /set peers \{\n {4}type ipv4_addr; flags interval; auto-merge;\n {2}\}[\s\S]*chain input \{\n[^\n]*\n {2}\}/,
  );
  assert.equal(
    rootOverlayScript("ab12cd34", [], "csbv", ep),
    "table inet createos_overlay_ab12cd34\ndelete table inet createos_overlay_ab12cd34\n",
  );
});

test("the resolver's names: each named peer as <name>.<network> and <name>", () => {
  assert.equal(hostsFile([A, B]), "10.240.3.6 web.alpha web\n10.240.4.3 web.beta web\n");
  assert.equal(
    hostsFile([A], "db"),
    "10.240.3.5 db.alpha\n10.240.3.6 web.alpha web\n",
    "the sandbox itself by <name>.<network>",
  );
  assert.equal(hostsFile([A], "not a label"), "10.240.3.6 web.alpha web\n");
  assert.equal(hostsFile([], "db"), "");
});

test("the VXLAN endpoint: option, else settings, else 127.0.0.1:4789; a bad setting throws", () => {
  assert.deepEqual(overlayEndpoint(undefined, {}), { addr: "127.0.0.1", port: 4789 });
  assert.deepEqual(
    overlayEndpoint(undefined, {
      CREATEOS_SANDBOX_OVERLAY_ADDR: "192.0.2.4",
      CREATEOS_SANDBOX_OVERLAY_PORT: "4800",
    }),
    { addr: "192.0.2.4", port: 4800 },
  );
  assert.deepEqual(
    overlayEndpoint({ addr: "127.0.0.1", port: 4791 }, { CREATEOS_SANDBOX_OVERLAY_PORT: "1" }),
    {
      addr: "127.0.0.1",
      port: 4791,
    },
  );
  assert.throws(() => overlayEndpoint(undefined, { CREATEOS_SANDBOX_OVERLAY_PORT: "70000" }), /OVERLAY_PORT/);
  assert.throws(() => overlayEndpoint(undefined, { CREATEOS_SANDBOX_OVERLAY_ADDR: "host" }), /OVERLAY_ADDR/);
});
