/**
 * The root namespace's firewall (net/firewall.ts, `rootFirewallScript`) without a VM and without touching
 * the root namespace: throwaway namespaces stand in for the host (R, with a sandbox veth `csbv1`, the
 * proxies' address on its loopback, a DNS upstream of its own and a link to the world), a sandbox
 * namespace behind it (N: its own sockets, as its resolver or a compromised QEMU would open them, and a
 * 10.201 address standing for the guest after the namespace's SNAT) and the world (W: a DNS upstream, an
 * echo server, a VXLAN port). Needs root, like the engine itself.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { nft } from "../sys/index.js";
import { rootFirewallScript } from "./firewall.js";
import { GATEWAY_IP, PROXY_IP } from "./plan.js";
import {
  PROBE6_PY,
  PROBE_PY,
  echoServerPy,
  listen6Py,
  notOpen,
  notRefused,
  parseProbe,
} from "./testprobe.js";

test("the root table: VXLAN ports, the proxies' address, the upstreams, everything else refused (text)", () => {
  const s = rootFirewallScript({ vxlanPorts: [4789, 41000] }, [{ ip: "192.0.2.53", port: 5353 }]);
  assert.match(s, /set vxlan_ports \{\n {4}type inet_service;\n {4}elements = \{ 4789, 41000 \}/);
  // Whatever comes by a sandbox veth is judged by the device, not by a source the namespace could pick.
  assert.match(s, /chain input \{\n[^}]*iifname "csbv\*" jump from_sandbox\n/);
  assert.match(s, /chain forward \{\n[^}]*iifname "csbv\*" jump through_host\n/);
  const chain = (name: string) => new RegExp(`chain ${name} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(s)?.[1];
  const upstream =
    "    ip saddr 10.200.0.0/16 ip daddr 192.0.2.53 meta l4proto { udp, tcp } th dport 5353 accept\n";
  assert.equal(
    chain("from_sandbox"),
    `    ct state established,related accept\n    ip saddr 10.201.0.0/16 ip daddr ${PROXY_IP} meta l4proto tcp accept\n${upstream}    goto refuse`,
  );
  assert.equal(
    chain("through_host"),
    `    udp dport @vxlan_ports goto refuse\n    ct state established,related accept\n    oifname "csbv*" goto refuse\n    ip saddr 10.201.0.0/16 accept\n${upstream}    goto refuse`,
  );
});

const tag = `csbt-rfw${process.pid}`;
const R = `${tag}-r`; // the host
const N = `${tag}-n`; // a sandbox namespace
const W = `${tag}-w`; // the world
const HOST_VETH = "10.200.0.5"; // csbv1 in R
const NS_VETH = "10.200.0.6"; // v0 in N
const GUEST = "10.201.0.1"; // the guest's address after the namespace's SNAT
const HOST_OUT = "10.76.1.1"; // R's address towards W
const WORLD = "10.76.1.2";
const DNS_PORT = 53;
const servers: ChildProcess[] = [];

const sh = (netns: string, ...args: string[]) =>
  execFileSync("ip", ["netns", "exec", netns, ...args], { encoding: "utf8" });
const batch = (ns: string, lines: string[]) =>
  execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
const probe = (...targets: string[]) => parseProbe(sh(N, "python3", "-c", PROBE_PY, ...targets));
const probe6 = (...targets: string[]) => parseProbe(sh(N, "python3", "-c", PROBE6_PY, ...targets));
const serve = (ns: string, py: string) =>
  servers.push(spawn("ip", ["netns", "exec", ns, "python3", "-c", py], { stdio: "ignore" }));

function cleanup(): void {
  for (const s of servers) s.kill("SIGKILL");
  for (const ns of [R, N, W]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
}

before(async () => {
  assert.equal(process.getuid?.(), 0, "root firewall tests need root (network namespaces, nft)");
  for (const ns of [R, N, W]) execFileSync("ip", ["netns", "add", ns]);
  batch(R, ["link set lo up", `link add csbv1 type veth peer name v0 netns ${N}`]);
  batch(R, [`link add up0 type veth peer name eth0 netns ${W}`]);
  batch(R, [
    `addr add ${PROXY_IP}/32 dev lo`,
    `addr add ${HOST_VETH}/30 dev csbv1`,
    "addr add fe80::1/64 dev csbv1 nodad",
    "link set csbv1 up",
    `route add ${GUEST}/32 via ${NS_VETH}`,
    // the real host has no route back to it: here the answer is let through, so a refusal is seen as one
    `route add ${GATEWAY_IP}/32 via ${NS_VETH}`,
    `addr add ${HOST_OUT}/30 dev up0`,
    "link set up0 up",
  ]);
  batch(N, [
    "link set lo up",
    `addr add ${GUEST}/32 dev lo`,
    `addr add ${GATEWAY_IP}/32 dev lo`,
    `addr add ${NS_VETH}/30 dev v0`,
    "addr add fe80::2/64 dev v0 nodad",
    "link set v0 up",
    `route add default via ${HOST_VETH}`,
  ]);
  // No NAT here: W routes the sandbox ranges back through R, so a forwarded probe's answer returns.
  batch(W, [
    "link set lo up",
    `addr add ${WORLD}/30 dev eth0`,
    "link set eth0 up",
    `route add 10.200.0.0/15 via ${HOST_OUT}`,
  ]);
  // Every refusal answered (the real root namespace's ICMP rate limit is the host's; this one is a test's).
  sh(R, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0");
  for (const p of [7, DNS_PORT, 4789, 41000]) serve(W, echoServerPy(p));
  for (const p of [7, DNS_PORT]) serve(R, echoServerPy(p));
  serve(R, listen6Py(7));
  const upstreams = [
    { ip: HOST_OUT, port: DNS_PORT },
    { ip: WORLD, port: DNS_PORT },
  ];
  await nft(rootFirewallScript({ vxlanPorts: [4789, 41000] }, upstreams), R);
  for (let i = 0; i < 50; i++) {
    const w = sh(W, "ss", "-Hlnu").split("\n").length;
    const r = sh(R, "ss", "-Hlnt").split("\n").length;
    if (w > 4 && r > 3) break;
    await sleep(100);
  }
});

after(cleanup);

test("the namespace's own sockets reach the host only as a resolver, and no one else but the upstreams", () => {
  const refused = [
    `tcp:${HOST_VETH}:7`,
    `udp:${HOST_VETH}:7`,
    `tcp:${PROXY_IP}:7`,
    `tcp:${HOST_OUT}:7`,
    `udp:${HOST_OUT}:7`,
    `icmp:${HOST_OUT}`,
    // forwarded: the world, a port that is no upstream's, VXLAN
    `tcp:${WORLD}:7`,
    `udp:${WORLD}:7`,
    `udp:${WORLD}:4789`,
  ];
  assert.deepEqual(notRefused(probe(...refused)), []);
  // An address the namespace has besides its veth's (the gateway's, on tap0) is refused the same.
  assert.deepEqual(
    notRefused(probe(`tcp:${HOST_OUT}:7:${GATEWAY_IP}`, `udp:${HOST_OUT}:7:${GATEWAY_IP}`)),
    [],
  );
  // IPv6 link-local to the host's [::] listener: not even neighbour discovery gets through.
  const v6 = probe6("[fe80::1%v0]:7");
  assert.equal(v6.length, 1);
  assert.notEqual(v6[0]?.outcome, "open", JSON.stringify(v6));
  // The resolver's upstreams: one of the host's own addresses (TCP: the echo server would answer UDP from
  // the address facing N), one beyond it.
  assert.deepEqual(
    notOpen(probe(`tcp:${HOST_OUT}:${DNS_PORT}`, `tcp:${WORLD}:${DNS_PORT}`, `udp:${WORLD}:${DNS_PORT}`)),
    [],
  );
});

test("the guest (10.201, after its namespace): the proxies' address and the world, never VXLAN", () => {
  const src = (t: string) => `${t}:${GUEST}`;
  assert.deepEqual(
    notOpen(probe(src(`tcp:${PROXY_IP}:7`), src(`tcp:${WORLD}:7`), src(`udp:${WORLD}:7`))),
    [],
  );
  assert.deepEqual(
    notRefused(
      probe(
        src(`tcp:${HOST_VETH}:7`),
        src(`tcp:${HOST_OUT}:7`),
        src(`udp:${HOST_OUT}:${DNS_PORT}`),
        src(`udp:${WORLD}:4789`),
        src(`udp:${WORLD}:41000`),
      ),
    ),
    [],
  );
});
