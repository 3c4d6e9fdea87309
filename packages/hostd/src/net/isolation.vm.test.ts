/**
 * Network isolation on real VMs (net/firewall.ts). Two sandboxes A and B (to the host daemon, sandboxes of
 * two tenants, or of one tenant without a shared network, are just two VMs), a TCP + UDP listener of the
 * host on 0.0.0.0, and a private test host 10.77.<n>.2 in a network namespace of its own, linked to the
 * root namespace by a veth /30 (no other route). From A, TCP, UDP and ICMP to B, to every host address
 * and to the test host, and with a spoofed source, are refused at once. Then the daemon restarts with the
 * test host's /30 and every host address in the private egress list: it re-adopts A and B, the test host
 * answers A, and everything else is still refused. Probes only target addresses that exist on this machine.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/net/isolation.vm.test.js
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { rmSync } from "node:fs";
import { type Server, connect, createServer } from "node:net";
import { after, before, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { openOpts, run, sh, sleep, spec, tempDataDir } from "../testutil.js";
import { freeOctet, hostAddrs } from "./testhosts.js";
import { PROBE_PY, echoServerPy, notOpen, notRefused, parseProbe } from "./testprobe.js";

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
let echo: ChildProcess | undefined;
let tcp: Server | undefined;
const udp = createSocket("udp4");
let port = 0;

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
  echo = spawn("ip", ["netns", "exec", NS, "python3", "-c", echoServerPy(7)], { stdio: "ignore" });
  tcp = createServer((s) => s.end("host")).listen(0, "0.0.0.0");
  await new Promise((r) => tcp?.once("listening", r));
  port = (tcp.address() as { port: number }).port;
  udp.on("message", (m, from) => udp.send(m, from.port, from.address));
  await new Promise<void>((r) => udp.bind(port, "0.0.0.0", r));

  d = await LocalHostDaemon.open({ ...openOpts(dataDir), privateEgress: [] });
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
  echo?.kill("SIGKILL");
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

test("with the private host listed (and every host address), only the private host becomes reachable", async () => {
  await d?.close();
  const hosts = hostAddrs();
  d = await LocalHostDaemon.open({
    ...openOpts(dataDir),
    privateEgress: [testNet, `${lateAddr}/32`, ...hosts.map((h) => `${h}/32`)],
  });
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
  // B is refused the same way (the rules are per namespace, every namespace has them).
  assert.deepEqual(notOpen(await probe(b, kinds(testHost, 7))), []);
});
