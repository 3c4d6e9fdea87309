/**
 * The receiving side of a daemon's overlay root table (net/overlayplan.ts, `rootOverlayScript`) on a real
 * VXLAN device, without a VM and without touching the root namespace: a namespace H stands in for the
 * host (vx0 like a network's, its table), another, P, for the underlay beyond it, holding a peer's endpoint
 * address and a stranger's. Each sends H a VXLAN frame for the network's VNI; only the peer's reaches vx0.
 * Needs root, like the engine itself.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import type { OverlayMembership } from "@createos-sandbox/protocol";
import { nft } from "../sys/index.js";
import { rootOverlayScript } from "./overlayplan.js";
import { vxlanMacOf, vxlanSendPy, vxlanSniffPy } from "./testhosts.js";

const tag = `csbt-ovr${process.pid}`;
const H = `${tag}-h`;
const P = `${tag}-p`;
const HOST = "10.76.3.1";
const PEER = "10.76.3.2";
const STRANGER = "10.76.3.3";
const PORT = 4790;
const VNI = 4100;
const M: OverlayMembership = {
  network_id: "net_a",
  network_name: "alpha",
  vni: VNI,
  cidr: "10.240.3.0/24",
  ip: "10.240.3.5",
  peers: [],
  remotes: [{ addr: PEER, port: PORT }],
};

function cleanup(): void {
  for (const ns of [H, P]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
}

before(() => {
  assert.equal(process.getuid?.(), 0, "overlay table tests need root (network namespaces, nft)");
  for (const ns of [H, P]) execFileSync("ip", ["netns", "add", ns]);
  const batch = (ns: string, lines: string[]) =>
    execFileSync("ip", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
  batch(H, [
    "link set lo up",
    `link add up0 type veth peer name eth0 netns ${P}`,
    `addr add ${HOST}/29 dev up0`,
    "link set up0 up",
    `link add vx0 type vxlan id ${VNI} dstport ${PORT} local ${HOST} nolearning`,
    "link set vx0 up",
  ]);
  batch(P, [
    "link set lo up",
    `addr add ${PEER}/29 dev eth0`,
    `addr add ${STRANGER}/29 dev eth0`,
    "link set eth0 up",
  ]);
});

after(cleanup);

test("VXLAN for a hosted network is taken from its remotes only", async () => {
  await nft(rootOverlayScript("t", [M], "csbv", { addr: HOST, port: PORT }), H);
  const sniff = promisify(execFile)("ip", ["netns", "exec", H, "python3", "-c", vxlanSniffPy("vx0")]);
  await sleep(500);
  execFileSync("ip", ["netns", "exec", P, "python3", "-c", vxlanSendPy(VNI, HOST, PORT), PEER, STRANGER]);
  const seen = (await sniff).stdout.trim().split("\n");
  assert.ok(seen.includes(vxlanMacOf(PEER)), `the peer's frame reaches vx0: ${seen}`);
  assert.ok(!seen.includes(vxlanMacOf(STRANGER)), `the stranger's frame is dropped: ${seen}`);
});
