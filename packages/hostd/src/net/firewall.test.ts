/**
 * The guest firewall without a VM: three throwaway network namespaces stand in for a guest (eth0 with the
 * guest's MAC and address), its sandbox namespace (tap0 is a veth end here, with the real rule set) and a
 * private host behind it. Nothing touches the root namespace. Needs root, like the engine itself: without
 * it the suite fails saying so rather than passing on nothing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { HostdError } from "@createos-sandbox/protocol";
import { applySlotFirewall, firewallConfig, parseCidr, slotFirewallScript } from "./firewall.js";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC } from "./plan.js";
import { PROBE_PY, echoServerPy, notOpen, notRefused, parseProbe } from "./testprobe.js";

test("CIDRs are parsed and normalised; anything else is refused with the variable's name", () => {
  assert.equal(parseCidr("10.76.0.2/30"), "10.76.0.0/30");
  assert.equal(parseCidr(" 203.0.113.80 "), "203.0.113.80/32");
  assert.equal(parseCidr("0.0.0.0/0"), "0.0.0.0/0");
  assert.equal(parseCidr("255.255.255.255/1"), "128.0.0.0/1");
  for (const bad of ["10.0.0.0/33", "fd00::/8", "10.0.0", "example.com", "10.0.0.0/"])
    assert.throws(
      () => parseCidr(bad),
      (e: unknown) => e instanceof HostdError && /CREATEOS_SANDBOX_PRIVATE_EGRESS/.test(e.message),
    );
  assert.deepEqual(firewallConfig(undefined, {}).privateEgress, []);
  assert.deepEqual(
    firewallConfig(undefined, { CREATEOS_SANDBOX_PRIVATE_EGRESS: "10.1.2.3/8, ,192.168.1.1" }).privateEgress,
    ["10.0.0.0/8", "192.168.1.1/32"],
  );
  assert.deepEqual(firewallConfig(["172.16.0.0/12"], { CREATEOS_SANDBOX_PRIVATE_EGRESS: "10.0.0.0/8" }), {
    privateEgress: ["172.16.0.0/12"],
    vxlanPorts: [4789],
  });
  // The daemon's own VXLAN port is refused to guests with IANA's, once.
  assert.deepEqual(firewallConfig([], {}, 41000).vxlanPorts, [4789, 41000]);
  assert.deepEqual(firewallConfig([], {}, 4789).vxlanPorts, [4789]);
});

test("the script lists the operator's CIDRs and an empty set without elements", () => {
  assert.match(
    slotFirewallScript({ privateEgress: ["10.76.0.0/30"] }, []),
    /elements = \{ 10\.76\.0\.0\/30 \}/,
  );
  assert.match(slotFirewallScript({ privateEgress: [] }, ["192.0.2.2"]), /set host \{\n[^}]*192\.0\.2\.2 \}/);
  assert.doesNotMatch(
    slotFirewallScript({ privateEgress: [] }, []),
    /set private_egress \{\n[^}]*elements/,
    "an empty set is declared without elements",
  );
  // A private network's veth (net/overlay.ts) is accepted before the private ranges refuse its subnet.
  assert.match(
    slotFirewallScript({ privateEgress: [] }, []),
    /meta nfproto != ipv4 goto refuse\n {4}oifname "ov\*" accept\n {4}ip daddr 10\.200\.0\.1 /,
  );
});

const tag = `csbt-fw${process.pid}`;
const G = `${tag}-g`; // the guest
const N = `${tag}-n`; // its sandbox namespace
const O = `${tag}-o`; // a private host beyond it
const PRIVATE_HOST = "10.76.0.2";
/** Stands for another sandbox's address (outside every slot's range, so no real sandbox has it). */
const OTHER_SANDBOX = "10.201.255.254";
const SPOOF = "169.254.0.25";
let echo: ChildProcess | undefined;

const sh = (netns: string, ...args: string[]) =>
  execFileSync("ip", ["netns", "exec", netns, ...args], { encoding: "utf8" });

function probe(...targets: string[]) {
  return parseProbe(sh(G, "python3", "-c", PROBE_PY, ...targets));
}

function cleanup(): void {
  echo?.kill("SIGKILL");
  for (const ns of [G, N, O]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
}

before(async () => {
  assert.equal(process.getuid?.(), 0, "firewall tests need root (network namespaces, nft)");
  for (const ns of [G, N, O]) execFileSync("ip", ["netns", "add", ns]);
  const batch = (ns: string, lines: string[]) =>
    execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
  batch(N, ["link set lo up", `link add tap0 type veth peer name eth0 netns ${G}`]);
  batch(N, [`link add v0 type veth peer name pv netns ${O}`]);
  batch(G, [
    "link set lo up",
    `link set eth0 address ${GUEST_MAC}`,
    `addr add ${GUEST_IP}/30 dev eth0`,
    "link set eth0 up",
    `route add default via ${GATEWAY_IP}`,
  ]);
  batch(N, [
    `addr add ${GATEWAY_IP}/30 dev tap0`,
    "link set tap0 up",
    "addr add 10.76.0.1/30 dev v0",
    "link set v0 up",
    `route add ${OTHER_SANDBOX}/32 via ${PRIVATE_HOST}`,
  ]);
  batch(O, [
    "link set lo up",
    `addr add ${PRIVATE_HOST}/30 dev pv`,
    `addr add ${OTHER_SANDBOX}/32 dev pv`,
    "link set pv up",
    "route add 169.254.0.0/16 via 10.76.0.1",
  ]);
  sh(N, "sysctl", "-qw", "net.ipv4.ip_forward=1");
  echo = spawn("ip", ["netns", "exec", O, "python3", "-c", echoServerPy(7)], { stdio: "ignore" });
  await applySlotFirewall(N, firewallConfig([], {}));
  for (let i = 0; i < 50; i++) {
    if (sh(O, "ss", "-Hlnu", "sport = :7").trim() !== "") break;
    await sleep(100);
  }
});

after(cleanup);

const privateTargets = [`tcp:${PRIVATE_HOST}:7`, `udp:${PRIVATE_HOST}:7`, `icmp:${PRIVATE_HOST}`];
const otherSandbox = [`tcp:${OTHER_SANDBOX}:7`, `udp:${OTHER_SANDBOX}:7`, `icmp:${OTHER_SANDBOX}`];
const spoofed = [
  `tcp:${PRIVATE_HOST}:7:${SPOOF}`,
  `udp:${PRIVATE_HOST}:7:${SPOOF}`,
  `icmp:${PRIVATE_HOST}::${SPOOF}`,
];

test("by default: private addresses, other sandboxes and the gateway's other ports are refused at once", () => {
  const r = probe(...privateTargets, ...otherSandbox, `tcp:${GATEWAY_IP}:22`, `udp:${GATEWAY_IP}:9`);
  assert.deepEqual(notRefused(r), []);
  // DNS to the gateway passes the firewall: with no resolver here the kernel answers port unreachable.
  assert.deepEqual(
    probe(`udp:${GATEWAY_IP}:53`).map((x) => x.outcome),
    ["errno:ECONNREFUSED"],
  );
});

test("listed CIDRs become reachable, other sandboxes never; rules are replaced in place", async () => {
  sh(G, "ip", "addr", "add", `${SPOOF}/32`, "dev", "eth0");
  await applySlotFirewall(N, firewallConfig(["10.76.0.0/30", "10.201.0.0/16"]));
  assert.deepEqual(notOpen(probe(...privateTargets)), []);
  assert.deepEqual(notRefused(probe(...otherSandbox)), []);
  // A spoofed source is refused even where the destination is allowed.
  assert.deepEqual(notRefused(probe(...spoofed)), []);
  const tables = sh(N, "nft", "list", "tables");
  assert.equal(tables.match(/createos_fw/g)?.length, 1, tables);
  await applySlotFirewall(N, firewallConfig([], {}));
  assert.deepEqual(notRefused(probe(...privateTargets)), []);
});

test("a forged MAC is dropped on tap0", async () => {
  await applySlotFirewall(N, firewallConfig(["10.76.0.0/30"]));
  assert.deepEqual(notOpen(probe(`tcp:${PRIVATE_HOST}:7`)), []);
  sh(G, "ip", "link", "set", "eth0", "address", "02:fc:00:00:00:02");
  assert.deepEqual(
    probe(`tcp:${PRIVATE_HOST}:7`).map((x) => x.outcome),
    ["timeout"],
  );
});
