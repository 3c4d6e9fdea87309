/**
 * Private networks on real VMs (net/overlay.ts). On one host daemon: a1 and a2 on network A (from create),
 * b1 on network B (another subnet), x on none. Members reach each other by address and by name; x and b1
 * are refused, spoofed sources too; x joins A live and leaves it; overlay bytes are neither metered nor
 * refused by a deny-everything allowlist; membership survives pause/resume and a daemon restart (which
 * also rebuilds a veth removed behind its back); a second daemon on this machine (another VXLAN port) hosts
 * a3 on A, reached across VXLAN over 127.0.0.1, and A's VXLAN frames from a source that is no remote of A
 * (127.0.0.2) are dropped; destroy leaves nothing. Every probe targets an address of this machine.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/net/overlay.vm.test.js
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import type { OverlayEndpoint, OverlayMembership, VmSpec } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "../daemon.js";
import { overlayTag } from "../overlay.js";
import { openOpts, run, sh, sleep, spec, tempDataDir } from "../testutil.js";
import { sinkPy, uploadPy, vxlanMacOf, vxlanSendPy, vxlanSniffPy } from "./testhosts.js";
import { PROBE_PY, echoServerPy, notOpen, notRefused, parseProbe } from "./testprobe.js";

const dirs = [tempDataDir("ovl1"), tempDataDir("ovl2")];
const ports = [41000 + (process.pid % 4000) * 2, 41001 + (process.pid % 4000) * 2];
const ep = (i: number): OverlayEndpoint => ({ addr: "127.0.0.1", port: ports[i] as number });
const octet = 10 + (process.pid % 200);
const NET_A = `10.240.${octet}.0/24`;
const NET_B = `10.241.${octet}.0/24`;
const ipA = (n: number) => `10.240.${octet}.${n}`;
const ipB = (n: number) => `10.241.${octet}.${n}`;
const VNI_A = 900000 + (process.pid % 50000) * 2;
const VNI_B = VNI_A + 1;
const d: (LocalHostDaemon | undefined)[] = [undefined, undefined];
const ids: Record<string, string> = {};
const specs: Record<string, VmSpec> = {};
/** Every network namespace seen while the test ran: none may be left at the end. */
const seen = new Set<string>();

/** Network A's members by name: address, and the daemon hosting it. */
const aMembers = new Map<string, { ip: string; host: number }>();

const daemon = (i = 0) => d[i] as LocalHostDaemon;
/** The first daemon keeps a warm pool (creates adopt pooled VMs, which must join nothing), the second none. */
const open = (i: number) =>
  LocalHostDaemon.open({
    ...openOpts(dirs[i] as string),
    warmPool: i === 0 ? 1 : 0,
    overlay: ep(i),
    log: { info() {}, warn: note(i, "warn"), error: note(i, "error") },
  });
/** The daemons' warnings and errors (an overlay step that failed is only logged): shown if the end check fails. */
const warnings: string[] = [];
function note(i: number, level: string) {
  return (msg: string, fields?: Record<string, unknown>) =>
    void warnings.push(`daemon ${i} ${level}: ${msg} ${JSON.stringify(fields ?? {})}`);
}

/** The daemon's overlay tag, from its layout root. */
const tagOf = (i: number) => overlayTag(join(dirs[i] as string, "hostd"));

/** Member ports on each of this test's network namespaces' bridges, by namespace. */
function bridgePorts(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const ns of ourNetns()) {
    const links = execFileSync("ip", ["-n", ns, "-o", "link", "show"], { encoding: "utf8" });
    out.set(
      ns,
      [...links.matchAll(/^\d+: (m\d+)@/gm)].map((m) => m[1] as string),
    );
  }
  return out;
}

const portCounts = () => [...bridgePorts().values()].map((l) => l.length).sort();

/** `name`'s membership of A as the control plane would send it: every other member a peer. */
function memberA(name: string): OverlayMembership {
  const me = aMembers.get(name);
  assert.ok(me);
  const hosts = new Set([...aMembers.values()].map((m) => m.host));
  return {
    network_id: "net_a",
    network_name: "alpha",
    vni: VNI_A,
    cidr: NET_A,
    ip: me.ip,
    peers: [...aMembers]
      .filter(([n]) => n !== name)
      .map(([n, m]) => ({ sandbox_id: ids[n] ?? n, name: n, ip: m.ip })),
    remotes: [...hosts].filter((h) => h !== me.host).map(ep),
  };
}

const memberB = (): OverlayMembership => ({
  network_id: "net_b",
  network_name: "beta",
  vni: VNI_B,
  cidr: NET_B,
  ip: ipB(2),
  peers: [],
  remotes: [],
});

/** Pushes A's current member list to every running member (what the control plane does on a change). */
async function pushA(): Promise<number> {
  const t0 = performance.now();
  for (const [n, m] of aMembers) await daemon(m.host).setNetworks(ids[n] as string, [memberA(n)]);
  return (performance.now() - t0) / aMembers.size;
}

async function probe(name: string, targets: string[], host = 0) {
  const r = await run(daemon(host), ids[name] as string, ["python3", "-c", PROBE_PY, ...targets]);
  assert.equal(r.code, 0, r.stderr);
  return parseProbe(r.stdout);
}

const RESOLVE_PY = `
import socket, sys
for n in sys.argv[1:]:
    try:
        print(n, socket.gethostbyname(n))
    except OSError:
        print(n, "none")
`;

async function resolve(name: string, names: string[], host = 0): Promise<Record<string, string>> {
  const r = await run(daemon(host), ids[name] as string, ["python3", "-c", RESOLVE_PY, ...names]);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(" ") as [string, string]),
  );
}

const kinds = (ip: string) => [`tcp:${ip}:7000`, `udp:${ip}:7000`, `icmp:${ip}`];

async function startVm(name: string, s: VmSpec, host = 0): Promise<void> {
  ids[name] = s.sandbox_id;
  specs[name] = s;
  await daemon(host).create(s);
  await sh(daemon(host), s.sandbox_id, `nohup python3 -c '${echoServerPy(7000)}' >/dev/null 2>&1 &`);
}

/** The networks' namespaces of this test's VNIs (another test's daemons may have their own). */
function ourNetns(): string[] {
  const list = (existsSync("/run/netns") ? readdirSync("/run/netns") : []).filter((n) =>
    new RegExp(`^csbn-[0-9a-f]+-(${VNI_A}|${VNI_B})$`).test(n),
  );
  for (const n of list) seen.add(n);
  return list;
}

before(async () => {
  d[0] = await open(0);
  aMembers.set("a1", { ip: ipA(5), host: 0 });
  aMembers.set("a2", { ip: ipA(6), host: 0 });
  const s1 = spec();
  const s2 = spec();
  ids.a1 = s1.sandbox_id;
  ids.a2 = s2.sandbox_id;
  await startVm("a1", { ...s1, networks: [memberA("a1")] });
  await startVm("a2", { ...s2, networks: [memberA("a2")] });
  await startVm("b1", spec({ networks: [memberB()] }));
  await startVm("x", spec());
  assert.equal(ourNetns().length, 2, "one namespace per network");
  // A: a1 and a2; B: b1 — the pooled VM kept ready for the next create is on none.
  assert.deepEqual(portCounts(), [1, 2]);
  await sh(daemon(), ids.a2 as string, `nohup python3 -c '${sinkPy(7001)}' >/dev/null 2>&1 &`);
  // the echo servers are up
  for (let i = 0; i < 50 && notOpen(await probe("a1", [`tcp:${ipA(6)}:7000`])).length > 0; i++)
    await sleep(200);
});

after(async () => {
  for (const dm of d) {
    if (!dm) continue;
    for (const v of await dm.list()) await dm.destroy(v.sandbox_id).catch(() => undefined);
    await dm.close();
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test("members of a network reach each other by address, by name and by <name>.<network>", async () => {
  assert.deepEqual(notOpen(await probe("a1", [...kinds(ipA(6))])), []);
  assert.deepEqual(notOpen(await probe("a2", [...kinds(ipA(5))])), []);
  const self = `${specs.a1?.hostname}.alpha`;
  const names = await resolve("a1", ["a2", "a2.alpha", self]);
  assert.equal(names.a2, ipA(6));
  assert.equal(names["a2.alpha"], ipA(6));
  assert.equal(names[self], ipA(5), "its own hostname on the network");
  assert.deepEqual(notOpen(await probe("a1", ["tcp:a2.alpha:7000", "tcp:a2:7000"])), []);
  // What a peer sees as the source is the member's address, not the guest's fixed one.
  const info = await daemon().info();
  assert.deepEqual(info.overlay_endpoint, ep(0));
});

test("a non-member and a member of another network are refused, by address and by name", async () => {
  assert.deepEqual(notRefused(await probe("x", [...kinds(ipA(5)), ...kinds(ipA(6))])), []);
  assert.deepEqual(notRefused(await probe("b1", [...kinds(ipA(5)), ...kinds(ipA(6))])), []);
  assert.equal((await resolve("x", ["a1"])).a1, "none");
  assert.equal((await resolve("b1", ["a1.alpha"]))["a1.alpha"], "none");
  // ... and A's members cannot reach B's.
  assert.deepEqual(notRefused(await probe("a1", kinds(ipB(2)))), []);
});

test("spoofed sources do not get through: another member's address, a subnet address", async () => {
  await sh(daemon(), ids.b1 as string, `ip addr add ${ipA(5)}/32 dev eth0`);
  await sh(daemon(), ids.a2 as string, `ip addr add ${ipA(7)}/32 dev eth0`);
  const spoofed = [
    `tcp:${ipA(6)}:7000:${ipA(5)}`,
    `udp:${ipA(6)}:7000:${ipA(5)}`,
    `icmp:${ipA(6)}::${ipA(5)}`,
  ];
  assert.deepEqual(notRefused(await probe("b1", spoofed)), []);
  const fromA2 = [`tcp:${ipA(5)}:7000:${ipA(7)}`, `udp:${ipA(5)}:7000:${ipA(7)}`];
  assert.deepEqual(notRefused(await probe("a2", fromA2)), []);
});

test("overlay traffic passes a deny-everything allowlist and is not metered", async () => {
  const a1 = ids.a1 as string;
  // Allows one name nothing resolves (.invalid): every address and every other name is refused.
  await daemon().setEgress(a1, ["nothing.invalid"]);
  await daemon().takeNetUsage(a1);
  const r = await run(daemon(), a1, ["python3", "-c", uploadPy(ipA(6), 7001, 2_000_000)]);
  assert.match(r.stdout, /done sent=2000000/);
  assert.equal((await resolve("a1", ["a2"])).a2, ipA(6), "names answered under the allowlist's NXDOMAIN");
  const u = await daemon().takeNetUsage(a1);
  assert.ok(u.egress_bytes < 20_000, `egress counted ${u.egress_bytes}`);
  assert.ok(u.ingress_bytes < 20_000, `ingress counted ${u.ingress_bytes}`);
  assert.equal(u.denied_packets, 0);
  await daemon().setEgress(a1, ["*"]);
});

test("live: x joins network A (reachable, named), then leaves (cut at once)", async (t) => {
  aMembers.set("x", { ip: ipA(9), host: 0 });
  const ms = await pushA();
  t.diagnostic(`setNetworks: ${ms.toFixed(1)} ms per call (join)`);
  assert.deepEqual(notOpen(await probe("x", kinds(ipA(5)))), []);
  assert.deepEqual(notOpen(await probe("a1", kinds(ipA(9)))), []);
  assert.equal((await resolve("a1", ["x.alpha"]))["x.alpha"], ipA(9));
  assert.equal((await resolve("x", ["a2"])).a2, ipA(6));
  // A flow that lives through the detach.
  await sh(
    daemon(),
    ids.x as string,
    `nohup python3 -c '${uploadPy(ipA(6), 7001, 4_000_000_000)}' >/tmp/up 2>&1 &`,
  );
  await sleep(1000);
  aMembers.delete("x");
  const t0 = performance.now();
  await daemon().setNetworks(ids.x as string, []);
  t.diagnostic(`setNetworks: ${(performance.now() - t0).toFixed(1)} ms (leave)`);
  await pushA();
  assert.deepEqual(notRefused(await probe("x", kinds(ipA(5)))), []);
  assert.equal((await resolve("a1", ["x.alpha"]))["x.alpha"], "none");
  assert.equal((await resolve("x", ["a2"])).a2, "none");
  await sleep(4000);
  assert.match(await sh(daemon(), ids.x as string, "cat /tmp/up"), /stalled/, "the running flow was cut");
});

test("membership survives pause and resume", async (t) => {
  const a2 = ids.a2 as string;
  const snap = await daemon().pause(a2);
  assert.equal(notOpen(await probe("a1", [`tcp:${ipA(6)}:7000`])).length, 1, "paused: unreachable");
  const t0 = performance.now();
  await daemon().resume(snap, { ...(specs.a2 as VmSpec), networks: [memberA("a2")] });
  t.diagnostic(`resume with one network: ${(performance.now() - t0).toFixed(0)} ms`);
  assert.deepEqual(notOpen(await probe("a1", kinds(ipA(6)))), []);
  assert.deepEqual(notOpen(await probe("a2", kinds(ipA(5)))), []);
  const x = ids.x as string;
  const snapX = await daemon().pause(x);
  const t1 = performance.now();
  await daemon().resume(snapX, specs.x as VmSpec);
  t.diagnostic(`resume without networks: ${(performance.now() - t1).toFixed(0)} ms`);
});

test("a host-daemon restart keeps memberships and rebuilds a missing veth", async () => {
  await daemon().close();
  // Every member's veth, removed behind the daemon's back: the next one rebuilds them from the records
  // (of a created, a resumed and a pooled-then-adopted VM).
  for (const [ns, list] of bridgePorts())
    for (const p of list) execFileSync("ip", ["-n", ns, "link", "del", p]);
  assert.deepEqual(portCounts(), [0, 0]);
  d[0] = await open(0);
  assert.deepEqual(portCounts(), [1, 2]);
  assert.deepEqual(notOpen(await probe("a1", kinds(ipA(6)))), []);
  assert.deepEqual(notOpen(await probe("a2", kinds(ipA(5)))), []);
  assert.deepEqual(notRefused(await probe("x", kinds(ipA(5)))), []);
});

test("across host daemons: VXLAN between two daemons on this machine", async () => {
  d[1] = await open(1);
  aMembers.set("a3", { ip: ipA(8), host: 1 });
  const s3 = spec();
  ids.a3 = s3.sandbox_id;
  await startVm("a3", { ...s3, networks: [memberA("a3")] }, 1);
  await pushA();
  ourNetns();
  let open3: string[] = ["not probed"];
  for (let i = 0; i < 20 && open3.length > 0; i++) {
    open3 = notOpen(await probe("a1", [`tcp:${ipA(8)}:7000`]));
    if (open3.length > 0) await sleep(200);
  }
  assert.deepEqual(notOpen(await probe("a1", kinds(ipA(8)))), []);
  assert.deepEqual(notOpen(await probe("a3", kinds(ipA(6)), 1)), []);
  assert.equal((await resolve("a3", ["a1.alpha"], 1))["a1.alpha"], ipA(5));
  // B spans only the first daemon: a3 reaches nothing of it.
  assert.deepEqual(notRefused(await probe("a3", kinds(ipB(2)), 1)), []);
  // The first daemon's endpoint takes A's frames from A's remote (127.0.0.1, the second daemon) only:
  // one from 127.0.0.2, which this machine owns but no daemon names, never reaches A's VXLAN device.
  const ns = `csbn-${tagOf(0)}-${VNI_A}`;
  const sniff = promisify(execFile)("ip", ["netns", "exec", ns, "python3", "-c", vxlanSniffPy("vx0")]);
  await sleep(500);
  execFileSync("python3", [
    "-c",
    vxlanSendPy(VNI_A, "127.0.0.1", ports[0] as number),
    "127.0.0.1",
    "127.0.0.2",
  ]);
  const frames = (await sniff).stdout.trim().split("\n");
  assert.ok(frames.includes(vxlanMacOf("127.0.0.1")), `the remote's frame reaches vx0: ${frames}`);
  assert.ok(!frames.includes(vxlanMacOf("127.0.0.2")), `another source's is dropped: ${frames}`);
});

test("destroy removes the members; the networks' namespaces go with the last one", async (t) => {
  for (const i of [0, 1]) for (const v of await daemon(i).list()) await daemon(i).destroy(v.sandbox_id);
  assert.deepEqual(ourNetns(), []);
  assert.ok(seen.size >= 3, `namespaces seen: ${[...seen]}`);
  t.diagnostic(`daemon warnings and errors over the whole test: ${warnings.length}`);
  for (const w of warnings.slice(0, 5)) t.diagnostic(w.slice(0, 300));
  const tables = execFileSync("nft", ["list", "tables"], { encoding: "utf8" });
  const left = [...tables.matchAll(/table inet (createos_overlay_\w+)/g)].map((m) =>
    execFileSync("nft", ["list", "table", "inet", m[1] as string], { encoding: "utf8" }),
  );
  // The subnets in a table left behind tell whose it is (this test's are 10.240/10.241.<octet>).
  assert.deepEqual(
    left,
    [],
    `ours: ${dirs.map((_, i) => tagOf(i)).join(", ")}; the daemons said:\n${warnings.join("\n")}`,
  );
});
