/**
 * The cap on a guest's open flows (net/firewall.ts, GUEST_FLOWS) on the real kernel, without a VM: throwaway
 * namespaces stand in for the guest (G: the guest's MAC and address, as the anti-spoof table wants them),
 * its sandbox namespace (N: the slot's firewall, with a small cap) and the world (W, which counts what
 * arrives). Needs root, like the engine itself.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { nft } from "../sys/index.js";
import { slotFirewallScript } from "./firewall.js";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC } from "./plan.js";

const tag = `csbt-gfl${process.pid}`;
const G = `${tag}-g`;
const N = `${tag}-n`;
const W = `${tag}-w`;
const N_OUT = "10.76.3.1";
const WORLD = "10.76.3.2";
const CAP = 20;

const sh = (netns: string, ...args: string[]) =>
  execFileSync("ip", ["netns", "exec", netns, ...args], { encoding: "utf8" });
const batch = (ns: string, lines: string[]) =>
  execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });

/**
 * From one socket: a packet to the world's echo port and its answer (that flow is established), one packet to
 * each of `more` other ports (a flow each, never answered), then `again` more to the echo port.
 */
const sendPy = (more: number, again: number) => `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"x", ("${WORLD}", 21000))
s.recvfrom(16)
for p in range(21001, 21001 + ${more}):
    try: s.sendto(b"x", ("${WORLD}", p))
    except OSError: pass
    time.sleep(0.002)
for _ in range(${again}):
    s.sendto(b"x", ("${WORLD}", 21000))
    s.recvfrom(16)
`;

const ECHO_PY = `
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("${WORLD}", 21000))
while True:
    d, a = u.recvfrom(16); u.sendto(d, a)
`;
let echo: ChildProcess | undefined;

/** Packets W received on the probe ports so far. */
function arrived(): number {
  const t = sh(W, "nft", "list", "table", "inet", "count");
  return Number(/counter packets (\d+)/.exec(t)?.[1]);
}

function cleanup(): void {
  echo?.kill("SIGKILL");
  for (const ns of [G, N, W]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
}

before(async () => {
  assert.equal(process.getuid?.(), 0, "firewall tests need root (network namespaces, nft)");
  cleanup();
  for (const ns of [G, N, W]) execFileSync("ip", ["netns", "add", ns]);
  batch(N, [
    "link set lo up",
    `link add tap0 type veth peer name eth0 netns ${G}`,
    `addr add ${GATEWAY_IP}/30 dev tap0`,
    "link set tap0 up",
    `link add v0 type veth peer name eth0 netns ${W}`,
    `addr add ${N_OUT}/30 dev v0`,
    "link set v0 up",
  ]);
  batch(G, [
    "link set lo up",
    `link set eth0 address ${GUEST_MAC}`,
    `addr add ${GUEST_IP}/30 dev eth0`,
    "link set eth0 up",
    `route add ${WORLD}/32 via ${GATEWAY_IP}`,
  ]);
  batch(W, [
    "link set lo up",
    `addr add ${WORLD}/30 dev eth0`,
    "link set eth0 up",
    `route add ${GUEST_IP}/32 via ${N_OUT}`,
  ]);
  sh(N, "sysctl", "-qw", "net.ipv4.ip_forward=1");
  // The world is a private address: listed, as an operator lists a LAN host.
  await nft(slotFirewallScript({ privateEgress: [`${WORLD}/32`] }, [], CAP), N);
  echo = spawn("ip", ["netns", "exec", W, "python3", "-c", ECHO_PY], { stdio: "ignore" });
  for (let i = 0; i < 50 && !sh(W, "ss", "-Hlnu").includes("21000"); i++) await sleep(100);
  await nft(
    "table inet count {\n  chain input {\n    type filter hook input priority filter; policy accept;\n    udp dport 21000-21999 counter\n  }\n}\n",
    W,
  );
});

after(cleanup);

test("a guest's new flows past the cap are refused; the ones it has go on", () => {
  // 1 + 29 flows: the cap's 20 get out, 10 are refused; the established one's 5 later packets pass
  sh(G, "python3", "-c", sendPy(CAP + 9, 5));
  assert.equal(arrived(), CAP + 5);
});
