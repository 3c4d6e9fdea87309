import assert from "node:assert/strict";
import { test } from "node:test";
import {
  dnsUpstreams,
  dnsmasqArgs,
  parseUpstream,
  redirectRules,
  resolvConfServers,
  rootRules,
} from "./dns.js";

const noFiles = () => "";

test("upstreams come from CREATEOS_SANDBOX_DNS_SERVERS, ip[:port], comma-separated", () => {
  assert.deepEqual(dnsUpstreams({ CREATEOS_SANDBOX_DNS_SERVERS: "10.0.0.2, 192.0.2.9:5353," }, noFiles), [
    { ip: "10.0.0.2", port: 53 },
    { ip: "192.0.2.9", port: 5353 },
  ]);
  for (const bad of ["dns.example", "10.0.0.300", "10.0.0.2:0", "10.0.0.2:70000", "::1", "[::1]:53"])
    assert.throws(() => parseUpstream(bad), /not an IPv4 ip\[:port\]/, bad);
});

test("by default the host's resolv.conf, skipping what a namespace cannot reach", () => {
  const conf = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n";
  assert.deepEqual(resolvConfServers(conf), [{ ip: "10.255.255.53", port: 53 }]);
  const files: Record<string, string> = { "/etc/resolv.conf": conf };
  assert.deepEqual(
    dnsUpstreams({}, (p) => files[p] ?? ""),
    [{ ip: "10.255.255.53", port: 53 }],
  );
  // systemd-resolved's stub only: the servers behind it
  const stub: Record<string, string> = {
    "/etc/resolv.conf": "nameserver 127.0.0.53\n",
    "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.53\n",
  };
  assert.deepEqual(
    dnsUpstreams({}, (p) => stub[p] ?? ""),
    [{ ip: "192.0.2.53", port: 53 }],
  );
  assert.throws(() => dnsUpstreams({}, noFiles), /set CREATEOS_SANDBOX_DNS_SERVERS/);
  // an empty setting means the default, not "no servers"
  assert.deepEqual(
    dnsUpstreams({ CREATEOS_SANDBOX_DNS_SERVERS: " " }, (p) => files[p] ?? ""),
    [{ ip: "10.255.255.53", port: 53 }],
  );
});

test("dnsmasq listens on the gateway only, forwards to each upstream, no DHCP, no logs", () => {
  const args = dnsmasqArgs(
    "csb-7",
    [
      { ip: "10.0.0.2", port: 53 },
      { ip: "192.0.2.9", port: 5353 },
    ],
    ["--user=dnsmasq", "--group=nogroup"],
  );
  for (const a of [
    "--bind-interfaces",
    "--listen-address=169.254.0.22",
    "--except-interface=lo",
    "--no-resolv",
    "--server=10.0.0.2#53",
    "--server=192.0.2.9#5353",
    "--addn-hosts=/etc/hosts",
    "--addn-hosts=/run/createos-sandbox/dns/csb-7.hosts",
    "--pid-file=/run/createos-sandbox/dns/csb-7.pid",
    "--log-facility=/dev/null",
    "--conf-file=/dev/null",
    "--user=dnsmasq",
  ])
    assert.ok(args.includes(a), a);
  assert.ok(!args.some((a) => a.startsWith("--dhcp")), "no DHCP");
  assert.ok(!args.some((a) => a.startsWith("--log-queries")), "no query log");
  assert.equal(args.filter((a) => a.startsWith("--server=")).length, 2);
});

test("the redirect catches port 53 to any address but ours, the masquerade only resolver queries", () => {
  const r = redirectRules();
  assert.match(r, /table inet createos_dns/);
  assert.match(
    r,
    /iifname "tap0" ip daddr != 169\.254\.0\.22 meta l4proto \{ udp, tcp \} th dport 53 counter redirect to :53/,
  );
  assert.match(
    r,
    /chain input \{\n\s+type filter hook input priority filter; policy accept;\n\s+iifname "tap0" meta l4proto \{ udp, tcp \} th dport 53 limit rate over 200\/second burst 1000 packets counter drop/,
    "the guest's queries are capped",
  );
  const root = rootRules([{ ip: "10.0.0.2", port: 5353 }]);
  assert.match(
    root,
    /ip saddr 10\.200\.0\.0\/16 ip daddr 10\.0\.0\.2 meta l4proto \{ udp, tcp \} th dport 5353 masquerade/,
  );
});
