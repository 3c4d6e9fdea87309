import assert from "node:assert/strict";
import { test } from "node:test";
import { egressPolicy } from "@createos-sandbox/protocol/egress";
import { egressScript, resolverNameArgs } from "./egress.js";

const RULES = ["pypi.org", "*.github.com", "db.example.com:5432", "8.8.8.8", "1.1.1.0/24:53", "9.9.9.9:53"];

test("the egress table of a rule list (golden)", () => {
  assert.equal(
    egressScript(egressPolicy(RULES)),
    `table inet createos_egress
delete table inet createos_egress
table inet createos_egress {
  counter denied {
  }
  set nets {
    type ipv4_addr; flags interval; auto-merge;
    elements = { 8.8.8.8/32 }
  }
  set net_ports {
    type ipv4_addr . inet_service; flags interval;
    elements = { 1.1.1.0/24 . 53, 9.9.9.9/32 . 53 }
  }
  set dns {
    type ipv4_addr; flags timeout; timeout 3600s;
  }
  set dns_p5432 {
    type ipv4_addr; flags timeout; timeout 3600s;
  }
  set recent_denied {
    type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout;
    timeout 600s; size 64;
  }
  chain forward {
    type filter hook forward priority filter + 1; policy accept;
    iifname "tap0" jump from_guest
  }
  chain from_guest {
    ct direction reply accept
    oifname "ov*" accept
    ip daddr @nets accept
    meta l4proto { tcp, udp } ip daddr . th dport @net_ports accept
    meta l4proto != udp ip daddr @dns accept
    udp dport != { 80, 443 } ip daddr @dns accept
    meta l4proto { tcp, udp } ip daddr @dns_p5432 th dport 5432 accept
    meta l4proto { tcp, udp } update @recent_denied { ip daddr . meta l4proto . th dport }
    meta l4proto != { tcp, udp } update @recent_denied { ip daddr . meta l4proto . 0 }
    counter name denied
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }
}
`,
  );
});

test("to a name's addresses UDP 80/443 (QUIC, which the name proxy cannot check) is never accepted", () => {
  const script = egressScript(egressPolicy(["pypi.org:443", "web.example.com:80", "db.example.com:5432"]));
  const accepts = script.split("\n").filter((l) => l.includes("@dns") && l.endsWith(" accept"));
  assert.deepEqual(accepts, [
    "    tcp dport 80 ip daddr @dns_p80 accept",
    "    tcp dport 443 ip daddr @dns_p443 accept",
    "    meta l4proto { tcp, udp } ip daddr @dns_p5432 th dport 5432 accept",
  ]);
  // an address rule is an address rule: UDP 443 to a listed address is still accepted (before the names)
  const withNet = egressScript(egressPolicy(["pypi.org", "8.8.8.8", "9.9.9.9:443"])).split("\n");
  const at = (l: string) => withNet.indexOf(l);
  assert.ok(at("    ip daddr @nets accept") < at("    udp dport != { 80, 443 } ip daddr @dns accept"));
  assert.ok(
    at("    meta l4proto { tcp, udp } ip daddr . th dport @net_ports accept") <
      at("    meta l4proto != udp ip daddr @dns accept"),
  );
});

test("allow-all keeps only the counter: nothing is checked", () => {
  assert.equal(
    egressScript(egressPolicy(["*"])),
    "table inet createos_egress\ndelete table inet createos_egress\ntable inet createos_egress {\n  counter denied {\n  }\n}\n",
  );
});

test("the resolver answers listed names only and pins their addresses", () => {
  assert.deepEqual(resolverNameArgs(egressPolicy([]), ["10.0.0.53#53"]), ["--server=10.0.0.53#53"]);
  assert.deepEqual(
    resolverNameArgs(egressPolicy([...RULES, "pypi.org:443"]), ["10.0.0.53#53", "10.0.0.54#5353"]),
    [
      "--server=/*.github.com/10.0.0.53#53",
      "--server=/*.github.com/10.0.0.54#5353",
      "--server=/db.example.com/10.0.0.53#53",
      "--server=/db.example.com/10.0.0.54#5353",
      "--server=/pypi.org/10.0.0.53#53",
      "--server=/pypi.org/10.0.0.54#5353",
      "--nftset=/db.example.com/4#inet#createos_egress#dns_p5432",
      "--nftset=/github.com/4#inet#createos_egress#dns",
      "--nftset=/pypi.org/4#inet#createos_egress#dns,4#inet#createos_egress#dns_p443",
      "--address=/#/",
      "--max-cache-ttl=300",
    ],
  );
  // IP rules only: every name is NXDOMAIN
  assert.deepEqual(resolverNameArgs(egressPolicy(["8.8.8.8"]), ["10.0.0.53#53"]), [
    "--address=/#/",
    "--max-cache-ttl=300",
  ]);
});
