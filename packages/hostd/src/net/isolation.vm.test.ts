/**
 * Network isolation on real VMs (net/firewall.ts). Two sandboxes A and B (to the host daemon, sandboxes of
 * two tenants, or of one tenant without a shared network, are just two VMs), a TCP + UDP listener of the
 * host on 0.0.0.0, and a private test host 10.77.<n>.2 in a network namespace of its own, linked to the
 * root namespace by a veth /30 (no other route). From A, TCP, UDP and ICMP to B, to every host address
 * and to the test host, and with a spoofed source, are refused at once. From A's namespace itself (where
 * its QEMU runs: sockets of its own, not the guest's) no host listener and no other sandbox is reachable,
 * IPv6 link-local included, while the guest's DNAT to the name proxy still gets there. Then the daemon
 * restarts with the test host's /30 and every host address in the private egress list: it re-adopts A and
 * B, the test host answers A, and everything else is still refused, UDP to the test host's VXLAN ports
 * too. Probes only target addresses that exist on this machine.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/net/isolation.vm.test.js
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { rmSync } from "node:fs";
import { type Server, connect, createServer } from "node:net";
import { after, before, test } from "node:test";
import { LocalHostDaemon, type OpenOptions } from "../daemon.js";
import { openOpts, run, sh, sleep, spec, tempDataDir } from "../testutil.js";
import { PROXY_IP, netnsName, slotAddrs } from "./plan.js";
import { slotOfSource } from "./proxy.js";
import { freeOctet, hostAddrs } from "./testhosts.js";
import {
  PROBE6_PY,
  PROBE_PY,
  echoServerPy,
  listen6Py,
  notOpen,
  notRefused,
  parseProbe,
} from "./testprobe.js";

const dataDir = tempDataDir("iso");
const NS = `csbt-iso${process.pid}`;
const VETH = `csbti${process.pid}`;
let d: LocalHostDaemon | undefined;
let a = "";
let b = "";
let bIp = "";
let testNet = "";
let testHost = "";
/** An address the host gains after the sandboxes' rules were set (only the root namespace's guard knows it). */
let lateAddr = "";
const echo: ChildProcess[] = [];
let tcp: Server | undefined;
/** The daemon's own VXLAN port (refused to guests like 4789). */
const OVERLAY_PORT = 42000 + (process.pid % 4000);
/** The daemon's options: its overlay endpoint on loopback with {@link OVERLAY_PORT}. */
const opts = (privateEgress: string[]): OpenOptions => ({
  ...openOpts(dataDir),
  privateEgress,
  overlay: { addr: "127.0.0.1", port: OVERLAY_PORT },
});
const udp = createSocket("udp4");
let port = 0;
const port6 = 43000 + (process.pid % 4000);

/** A /30 in 10.77.0.0/16 that no address of this machine is in (nor its 10.78 twin). */
const freeTestNet = () => freeOctet(["10.77", "10.78"]);

async function probe(id: string, targets: string[]) {
  const r = await run(d as LocalHostDaemon, id, ["python3", "-c", PROBE_PY, ...targets]);
  assert.equal(r.code, 0, r.stderr);
  const res = parseProbe(r.stdout);
  assert.equal(res.length, targets.length, r.stdout);
  return res;
}

/** Whether the host itself connects to host:port (a positive control for the guests' refusals). */
function hostConnects(host: string, p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port: p }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

const kinds = (host: string, p: number) => [`tcp:${host}:${p}`, `udp:${host}:${p}`, `icmp:${host}`];

before(async () => {
  const n = freeTestNet();
  testNet = `10.77.${n}.0/30`;
  testHost = `10.77.${n}.2`;
  lateAddr = `10.78.${n}.1`;
  execFileSync("ip", ["netns", "add", NS]);
  execFileSync("ip", ["link", "add", VETH, "type", "veth", "peer", "name", "pv", "netns", NS]);
  execFileSync("ip", ["addr", "add", `10.77.${n}.1/30`, "dev", VETH]);
  execFileSync("ip", ["link", "set", VETH, "up"]);
  execFileSync("ip", ["-n", NS, "-batch", "-"], {
    input: `link set lo up\naddr add ${testHost}/30 dev pv\nlink set pv up\n`,
  });
  // Guests' traffic reaches it masqueraded to 10.77.<n>.1, so its connected /30 is all the routing it needs.
  // 7 as any service; 4789 and the daemon's overlay port as another host's VXLAN endpoint would be.
  for (const p of [7, 4789, OVERLAY_PORT])
    echo.push(spawn("ip", ["netns", "exec", NS, "python3", "-c", echoServerPy(p)], { stdio: "ignore" }));
  // An IPv6 listener of the host, on [::]: reachable by link-local from a namespace unless refused.
  echo.push(spawn("python3", ["-c", listen6Py(port6)], { stdio: "ignore" }));
  // A client that resets at once (hostConnects) is no error of the listener's.
  tcp = createServer((s) => s.on("error", () => undefined).end("host")).listen(0, "0.0.0.0");
  await new Promise((r) => tcp?.once("listening", r));
  port = (tcp.address() as { port: number }).port;
  udp.on("message", (m, from) => udp.send(m, from.port, from.address));
  await new Promise<void>((r) => udp.bind(port, "0.0.0.0", r));

  d = await LocalHostDaemon.open(opts([]));
  const [sa, sb] = [spec(), spec()];
  a = sa.sandbox_id;
  b = sb.sandbox_id;
  await d.create(sa);
  bIp = (await d.create(sb)).ip;
  await sh(d, b, `nohup python3 -c '${echoServerPy(8000)}' >/dev/null 2>&1 &`);
  await sh(d, a, "ip addr add 169.254.0.25/32 dev eth0");
  // B's listener answers the host (so a refusal from A is the firewall's, not a closed port).
  let up = false;
  for (let i = 0; i < 50 && !up; i++) {
    up = await hostConnects(bIp, 8000);
    if (!up) await sleep(200);
  }
  assert.ok(up, "B's listener answers the host");
});

after(async () => {
  if (d) {
    for (const v of await d.list()) await d.destroy(v.sandbox_id);
    await d.close();
  }
  for (const e of echo) e.kill("SIGKILL");
  spawnSync("ip", ["link", "del", VETH], { stdio: "ignore" });
  spawnSync("ip", ["netns", "del", NS], { stdio: "ignore" });
  tcp?.close();
  udp.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test("by default a guest reaches no other sandbox, no host address, no private host, and cannot spoof", async () => {
  const hosts = hostAddrs();
  assert.ok(hosts.length >= 2, `host addresses: ${hosts}`);
  const targets = [
    ...kinds(bIp, 8000),
    ...hosts.flatMap((h) => kinds(h, port)),
    ...kinds(testHost, 7),
    `tcp:${testHost}:7:169.254.0.25`,
    `udp:${testHost}:7:169.254.0.25`,
    `icmp:${testHost}::169.254.0.25`,
  ];
  const t0 = Date.now();
  assert.deepEqual(notRefused(await probe(a, targets)), []);
  // The test host is up: the host itself reaches it.
  assert.ok(await hostConnects(testHost, 7));
  // Fast as a whole too: ~3 × (number of host addresses) probes, each answered at once.
  assert.ok(Date.now() - t0 < 60_000, `probes took ${Date.now() - t0} ms`);
});

/** Runs `py` (with `args`) in sandbox `id`'s namespace: as that VM's QEMU would, not as its guest. */
async function inNamespace(id: string, py: string, args: string[]) {
  const vm = (await (d as LocalHostDaemon).list()).find((v) => v.sandbox_id === id);
  const slot = slotOfSource(vm?.ip ?? "");
  assert.ok(slot !== undefined, `slot of ${id}: ${vm?.ip}`);
  const out = execFileSync("ip", ["netns", "exec", netnsName(slot), "python3", "-c", py, ...args], {
    encoding: "utf8",
  });
  return { slot, res: parseProbe(out) };
}

test("A's namespace's own sockets reach no host listener and no sandbox; the guest's DNAT to a proxy does", async () => {
  const vm = (await (d as LocalHostDaemon).list()).find((v) => v.sandbox_id === a);
  const own = slotAddrs(slotOfSource(vm?.ip ?? "") ?? 0);
  const proxyPort = (d as unknown as { host: { nameProxy?: { ports: { http: number } } } }).host.nameProxy
    ?.ports.http;
  assert.ok(proxyPort, "the name proxy listens");
  // The host's addresses (other slots' veths aside, there may be many), its end of A's veth, the proxies'.
  const hosts = [...hostAddrs().filter((h) => !h.startsWith("10.200.")), own.hostIp, PROXY_IP];
  const tcpTargets = [
    ...hosts.map((h) => `tcp:${h}:${port}`),
    `tcp:${PROXY_IP}:${proxyPort}`,
    `tcp:${bIp}:8000`,
    `tcp:${testHost}:7`,
  ];
  // UDP refusals come from the root namespace, whose ICMP rate limit (6, then 1 a second) is the host's.
  const udpTargets = [`udp:${own.hostIp}:${port}`, `udp:${bIp}:8000`];
  const { res } = await inNamespace(a, PROBE_PY, [...tcpTargets, ...udpTargets]);
  assert.equal(res.length, tcpTargets.length + udpTargets.length);
  assert.deepEqual(notRefused(res.slice(0, tcpTargets.length)), []);
  const udp = res.slice(tcpTargets.length).filter((r) => r.outcome === "open");
  assert.deepEqual(udp, [], "no UDP answer from the host or B");
  // The host's [::] listener by the veth's IPv6 link-local address.
  const ll = execFileSync("ip", ["-6", "-o", "addr", "show", "dev", own.hostVeth, "scope", "link"], {
    encoding: "utf8",
  });
  const addr6 = / inet6 (fe80::[0-9a-f:]+)\//.exec(ll)?.[1];
  assert.ok(addr6, `link-local address of ${own.hostVeth}: ${ll}`);
  const v6 = (await inNamespace(a, PROBE6_PY, [`[${addr6}%v0]:${port6}`])).res;
  assert.equal(v6.length, 1);
  assert.notEqual(v6[0]?.outcome, "open", JSON.stringify(v6));
  // The host reaches its own listeners (so the refusals above are the firewall's).
  assert.ok(await hostConnects(own.hostIp, port));
  assert.ok(await hostConnects(`${addr6}%${own.hostVeth}`, port6));
  // The guest's way to a proxy, as the disk mounts wire it (a DNAT on the gateway), is open.
  const table = `table ip csbt_iso {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "tap0" ip daddr 169.254.0.22 tcp dport 7999 dnat to ${PROXY_IP}:${proxyPort}
  }
}
`;
  execFileSync("ip", ["netns", "exec", own.netns, "nft", "-f", "-"], { input: table });
  try {
    // The name proxy resets an allow-all sandbox's connection once it has accepted it: the handshake is
    // done (open), or the reset came before the probe looked (ECONNRESET); a refusal is ECONNREFUSED.
    const r = await probe(a, ["tcp:169.254.0.22:7999"]);
    assert.ok(["open", "errno:ECONNRESET"].includes(r[0]?.outcome ?? ""), JSON.stringify(r));
  } finally {
    execFileSync("ip", ["netns", "exec", own.netns, "nft", "delete", "table", "ip", "csbt_iso"]);
  }
});

test("with the private host listed (and every host address), only the private host becomes reachable", async () => {
  await d?.close();
  const hosts = hostAddrs();
  d = await LocalHostDaemon.open(opts([testNet, `${lateAddr}/32`, ...hosts.map((h) => `${h}/32`)]));
  execFileSync("ip", ["addr", "add", `${lateAddr}/32`, "dev", VETH]);
  const ids = (await d.list()).map((v) => v.sandbox_id);
  assert.ok(ids.includes(a) && ids.includes(b), `both VMs re-adopted: ${ids}`);
  assert.deepEqual(notOpen(await probe(a, kinds(testHost, 7))), []);
  const refused = [
    ...kinds(bIp, 8000),
    ...hosts.flatMap((h) => kinds(h, port)),
    ...kinds(lateAddr, port),
    `tcp:${testHost}:7:169.254.0.25`,
    `udp:${testHost}:7:169.254.0.25`,
    `icmp:${testHost}::169.254.0.25`,
  ];
  assert.deepEqual(notRefused(await probe(a, refused)), []);
  // VXLAN to a reachable address is refused whatever the port's owner (IANA's port, the daemon's own).
  assert.deepEqual(notOpen(await probe(a, [`tcp:${testHost}:4789`, `tcp:${testHost}:${OVERLAY_PORT}`])), []);
  assert.deepEqual(
    notRefused(await probe(a, [`udp:${testHost}:4789`, `udp:${testHost}:${OVERLAY_PORT}`])),
    [],
  );
  // B is refused the same way (the rules are per namespace, every namespace has them).
  assert.deepEqual(notOpen(await probe(b, kinds(testHost, 7))), []);
});
