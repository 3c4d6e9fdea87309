/**
 * The egress allowlist on a real VM (net/egress.ts), against test hosts in a network namespace of their
 * own: web servers (TCP + UDP echo on 80 and 8080, a TCP echo that holds connections on 9000) on two
 * addresses A and B (and C for a wildcard name), and a DNS server the sandbox's resolver forwards to (CREATEOS_SANDBOX_DNS_SERVERS) on
 * a third, all in 10.79.<n>.0/29, which the daemon lists as private egress. The namespace is linked to the
 * root namespace by a veth; no route leaves 10.0.0.0/8. One VM serves every assertion: each rule form
 * allows what it names and nothing else, refusals come at once, a change applies live (an established
 * flow to a removed destination is cut), names outside the list are NXDOMAIN, and the bypasses fail (a
 * kept-alive connection's next request, a second Host or an absolute URL for another name on port 80; QUIC,
 * UDP 443, to a name's address).
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/net/egress.vm.test.js
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { openOpts, run, sh, sleep, spec, tempDataDir } from "../testutil.js";
import { freeOctet } from "./testhosts.js";
import {
  dnsQueryPy,
  dnsServerPy,
  holdClientPy,
  holdEchoPy,
  httpSessionPy,
  nameClientPy,
  sinkPy,
  testHostNs,
  uploadPy,
  webServerPy,
} from "./testhosts.js";
import { PROBE_PY, notOpen, notRefused, parseProbe } from "./testprobe.js";

const dataDir = tempDataDir("egress");
const NS = `csbt-eg${process.pid}`;
const VETH = `csbte${process.pid}`;
const n = freeOctet(["10.79"]);
const NET = `10.79.${n}.0/29`;
const GW = `10.79.${n}.1`;
const A = `10.79.${n}.2`;
const B = `10.79.${n}.3`;
const DNS = `10.79.${n}.4`;
/** The wildcard's address: its own, so that pinning it allows nothing the other rules are tested against. */
const C = `10.79.${n}.5`;
const RECORDS = { "web-a.test": A, "web-b.test": B, "*.wild.test": C, "rebind.test": GW };
let d: LocalHostDaemon | undefined;
let id = "";
let down: (() => void) | undefined;

const daemon = () => d as LocalHostDaemon;

async function probe(targets: string[], on = id) {
  const r = await run(daemon(), on, ["python3", "-c", PROBE_PY, ...targets]);
  assert.equal(r.code, 0, r.stderr);
  const res = parseProbe(r.stdout);
  assert.equal(res.length, targets.length, r.stdout);
  return res;
}

/** `open` must connect, `refused` must be refused at once; both lists are probed in one guest run. */
async function expect(open: string[], refused: string[], on = id): Promise<void> {
  const res = await probe([...open, ...refused], on);
  assert.deepEqual(notOpen(res.slice(0, open.length)), [], "should connect");
  assert.deepEqual(notRefused(res.slice(open.length)), [], "should be refused at once");
}

const both = (host: string, port: number) => [`tcp:${host}:${port}`, `udp:${host}:${port}`];
/**
 * B is probed for UDP only where a refusal is expected: the test hosts' UDP echo answers from the link's
 * first address (A) whatever it was sent to, which a connected socket to B ignores.
 */
const tcp = (host: string, port: number) => [`tcp:${host}:${port}`];

/** What the guest gets for an HTTP request / TLS ClientHello naming `name`, sent to host:port. */
const say = async (host: string, port: number, name: string, kind: "http" | "tls") =>
  (await sh(daemon(), id, `python3 -c '${nameClientPy(host, port, name, kind)}'`)).trim();

async function setEgress(rules: string[]): Promise<number> {
  const t0 = performance.now();
  await daemon().setEgress(id, rules);
  return performance.now() - t0;
}

before(async () => {
  down = testHostNs(
    NS,
    VETH,
    GW,
    [A, B, DNS, C],
    [...[80, 443, 8080].map(webServerPy), holdEchoPy(9000), sinkPy(9100), dnsServerPy(DNS, RECORDS)],
  );
  process.env.CREATEOS_SANDBOX_DNS_SERVERS = DNS;
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), privateEgress: [NET] });
  const s = spec({ egress: [`${A}:80`] });
  id = s.sandbox_id;
  await d.create(s);
});

after(async () => {
  if (d) {
    for (const v of await d.list()) await d.destroy(v.sandbox_id);
    await d.close();
  }
  down?.();
  rmSync(dataDir, { recursive: true, force: true });
});

test("create-time ip:port: that port of that address only, TCP and UDP", async () => {
  await expect(both(A, 80), [...both(A, 8080), ...both(B, 80), `icmp:${B}`]);
});

test("ip, cidr and cidr:port rules; each change applies as setEgress returns", async (t) => {
  const ms = await setEgress([A]);
  t.diagnostic(`setEgress took ${ms.toFixed(1)} ms`);
  assert.ok(ms < 1000);
  await expect([...both(A, 80), ...both(A, 8080), `icmp:${A}`], [...both(B, 80), `icmp:${B}`]);
  assert.ok((await setEgress([`${A}/31`])) < 1000);
  await expect([...both(A, 8080), ...tcp(B, 80)], [`udp:${DNS}:80`, `tcp:${DNS}:80`]);
  assert.ok((await setEgress([`${A}/31:8080`])) < 1000);
  await expect([...both(A, 8080), ...tcp(B, 8080)], [...both(A, 80), ...both(B, 80)]);
  // `*` (and the empty list) allow everything again
  await setEgress(["*"]);
  await expect([...both(A, 80), ...tcp(B, 8080), ...tcp(DNS, 80)], []);
  const usage = await daemon().takeNetUsage(id);
  assert.ok(usage.egress_bytes > 0 && usage.ingress_bytes > 0, `bytes counted: ${JSON.stringify(usage)}`);
});

test("refusals are counted until taken", async () => {
  await setEgress([A]);
  await daemon().takeNetUsage(id);
  await expect([], [...tcp(B, 80), ...tcp(B, 8080)]);
  const u = await daemon().takeNetUsage(id);
  assert.ok(u.denied_packets >= 2, JSON.stringify(u));
  // the refused destinations, each listed once; a take does not clear them
  const mine = (l = u.recent_denied ?? []) => l.filter((r) => r.ip === B).map((r) => `${r.proto}:${r.port}`);
  assert.deepEqual(mine().sort(), ["tcp:80", "tcp:8080"], JSON.stringify(u.recent_denied));
  assert.ok(u.recent_denied?.every((r) => r.expires_in_s > 500 && r.expires_in_s <= 600));
  const again = await daemon().takeNetUsage(id);
  assert.equal(again.denied_packets, 0, "zeroed by the take");
  assert.deepEqual(mine(again.recent_denied).sort(), ["tcp:80", "tcp:8080"]);
  await setEgress([]);
});

test("bandwidth: an upload stops at the quota, exec still works, more quota lets traffic through at once", async (t) => {
  await daemon().takeNetUsage(id);
  await daemon().setBandwidth(id, 1024 * 1024);
  // 4 MiB to the test host's sink: only the first MiB (and whatever the kernel had in flight) gets out
  const up = await run(daemon(), id, ["python3", "-c", uploadPy(A, 9100, 4 << 20)]);
  assert.match(up.stdout, /^stalled sent=\d+/m, up.stdout + up.stderr);
  const u = await daemon().takeNetUsage(id);
  assert.ok(u.egress_bytes >= 900_000 && u.egress_bytes <= 1024 * 1024 + 65_536, JSON.stringify(u));
  assert.equal((await probe([`tcp:${A}:80`]))[0]?.outcome, "timeout", "capped: outside traffic stops");
  assert.equal((await sh(daemon(), id, "echo still-here")).trim(), "still-here");
  const t0 = performance.now();
  await daemon().setBandwidth(id, 64 << 20);
  const lift = performance.now() - t0;
  t.diagnostic(
    `setBandwidth (recharge) took ${lift.toFixed(1)} ms; capped at ${u.egress_bytes} bytes of 1048576`,
  );
  assert.ok(lift < 1000, "the cap is lifted when setBandwidth returns");
  await expect([`tcp:${A}:80`], []);
  const again = await run(daemon(), id, ["python3", "-c", uploadPy(A, 9100, 4 << 20)]);
  assert.match(again.stdout, /^done sent=4194304/m, again.stdout);
  await daemon().setBandwidth(id, -1);
});

test("a private range the operator did not list is a bad_request naming the rule", async () => {
  await assert.rejects(
    daemon().setEgress(id, ["10.80.0.1"]),
    /"10\.80\.0\.1".*CREATEOS_SANDBOX_PRIVATE_EGRESS/,
  );
  await assert.rejects(daemon().setEgress(id, ["web-a.test:99999"]), /"web-a\.test:99999"/);
});

test("host and host:port rules: listed names resolve and connect, every other name is NXDOMAIN", async (t) => {
  const ms = await setEgress(["web-a.test", "web-b.test:8080", "*.wild.test"]);
  t.diagnostic(`setEgress with names (resolver restarted) took ${ms.toFixed(1)} ms`);
  assert.match(
    await sh(daemon(), id, "getent hosts web-a.test"),
    new RegExp(`^${A.replace(/\./g, "\\.")}\\s`),
  );
  const other = await run(daemon(), id, ["getent", "hosts", "other.test"]);
  assert.equal(other.code, 2, "NXDOMAIN for a name not on the list");
  const bare = await run(daemon(), id, ["getent", "hosts", "wild.test"]);
  assert.equal(bare.code, 2, "*.wild.test does not cover wild.test itself");
  await expect(
    ["tcp:web-a.test:80", "tcp:web-a.test:8080", "tcp:web-b.test:8080", "tcp:x.wild.test:80"],
    ["tcp:web-b.test:80", `tcp:${DNS}:80`],
  );
});

test("bypasses fail: another DNS server (UDP and TCP) is our resolver; a listed name rebound to a private address", async () => {
  await setEgress(["web-a.test", "rebind.test"]);
  for (const proto of ["udp", "tcp"] as const) {
    const out = await sh(daemon(), id, `python3 -c '${dnsQueryPy("web-b.test", DNS, proto)}'`);
    assert.match(out, /rcode=3 answers=0/, `${proto} to ${DNS}: answered by the sandbox's resolver`);
  }
  // rebind.test answers the host's own address on the test link: never reachable, whatever the list says
  // (on 80/443 the name proxy takes the connection and refuses it: it will not dial that address either)
  await expect(["tcp:web-a.test:8080"], ["tcp:rebind.test:8080", "udp:rebind.test:8080"]);
  assert.equal(await say("rebind.test", 80, "rebind.test", "http"), "reply=HTTP/1.1 403 Forbidden");
  assert.equal(await say("rebind.test", 443, "rebind.test", "tls"), "errno:ECONNRESET");
  // dialling a listed name's address is fine; another address on the same host is not
  await expect([`tcp:${A}:8080`], [`tcp:${B}:8080`]);
});

test("HTTP and TLS to a name's address go through the name proxy: the Host / SNI must be a listed name", async () => {
  await setEgress(["web-a.test", "web-b.test:8080"]);
  // the listed name, by name (which pins A): through the proxy to A (HTTP re-served by the proxy as 1.1,
  // TLS spliced as the server sent it)
  assert.equal(await say("web-a.test", 80, "web-a.test", "http"), "reply=HTTP/1.1 200 OK");
  assert.equal(await say("web-a.test", 443, "web-a.test", "tls"), "reply=HTTP/1.0 200 OK");
  // A is allowed, but not for another name on it, nor without one
  assert.equal(await say(A, 80, "web-b.test", "http"), "reply=HTTP/1.1 403 Forbidden");
  assert.equal(await say(A, 443, "web-b.test", "tls"), "errno:ECONNRESET");
  assert.equal(await say(A, 443, "", "tls"), "errno:ECONNRESET");
  // an /etc/hosts entry in the guest changes nothing: the name is what counts, and the proxy resolves it
  await sh(daemon(), id, `echo "${A} web-b.test" >> /etc/hosts`);
  assert.equal(await say("web-b.test", 80, "web-b.test", "http"), "reply=HTTP/1.1 403 Forbidden");
  await sh(daemon(), id, "sed -i '/web-b.test/d' /etc/hosts");
  // ports other than 80/443 are matched by address: web-b.test:8080 as listed
  await expect(["tcp:web-b.test:8080"], [`tcp:${B}:80`]);
});

test("HTTP: every request on a connection is checked, not only the first", async () => {
  await setEgress(["web-a.test"]);
  const session = async (requests: string[]) => {
    const r = await run(daemon(), id, ["python3", "-c", httpSessionPy("web-a.test", 80, requests)]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  };
  const get = (target: string, host: string) => `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
  // a kept-alive connection's second request naming another site on the pinned address: refused
  assert.equal(
    await session([get("/", "web-a.test"), get("/", "web-b.test")]),
    "200 hello\n403 name proxy: web-b.test is not on this sandbox's egress allowlist for port 80\nclosed",
  );
  // an absolute-form target naming another site behind an allowed Host; a second Host header
  assert.match(
    await session([get("http://web-b.test/", "web-a.test")]),
    /^403 .*names another host.*\nclosed$/,
  );
  const twice = "GET / HTTP/1.1\r\nHost: web-a.test\r\nHost: web-b.test\r\n\r\n";
  assert.match(await session([twice]), /^403 name proxy: the request has more than one Host header\nclosed$/);
});

test("UDP 80/443 (QUIC) to a name's address is refused, TCP goes through the proxy; other ports by address", async () => {
  await setEgress(["web-a.test", "web-b.test:443"]);
  await expect(
    ["tcp:web-a.test:80", "tcp:web-a.test:443", "udp:web-a.test:8080", "tcp:web-b.test:443"],
    ["udp:web-a.test:443", "udp:web-a.test:80", "udp:web-b.test:443"],
  );
  // an address rule is an address rule: UDP 443 to it is allowed
  await setEgress(["web-a.test", `${A}:443`]);
  await expect([`udp:${A}:443`], [`udp:${A}:80`]);
});

test("an established flow to a removed destination is cut at once", async () => {
  await setEgress([A, B]);
  await sh(daemon(), id, `nohup python3 -c '${holdClientPy(A, 9000)}' >/tmp/hold.log 2>&1 &`);
  let log = "";
  for (let i = 0; i < 50 && !log.includes("connected"); i++) {
    await sleep(100);
    log = await sh(daemon(), id, "cat /tmp/hold.log");
  }
  assert.match(log, /connected/);
  await sleep(500);
  assert.doesNotMatch(await sh(daemon(), id, "cat /tmp/hold.log"), /errno|timeout|closed/);
  await setEgress([B]);
  await sleep(1500);
  assert.match(await sh(daemon(), id, "cat /tmp/hold.log"), /errno:ECONNRESET/);
});

test("the rules survive a host daemon restart, a pause + resume, and a fork gets its own", async () => {
  await setEgress([`${A}:8080`]);
  await daemon().close();
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), privateEgress: [NET] });
  await expect([`tcp:${A}:8080`], [`tcp:${A}:80`, `tcp:${B}:8080`]);
  const snap = await daemon().pause(id);
  // a fork runs under the rules its spec gives (the control plane passes the parent's unless told otherwise)
  const child = spec({ egress: [`${A}:80`] });
  await daemon().fork(snap, child);
  await expect([`tcp:${A}:80`], [`tcp:${A}:8080`, `tcp:${B}:80`], child.sandbox_id);
  await daemon().destroy(child.sandbox_id);
  await daemon().resume(snap, spec({ sandbox_id: id, egress: [`${B}:80`] }));
  await expect([`tcp:${B}:80`], [`tcp:${A}:8080`, `tcp:${B}:8080`]);
});

test("a pooled VM runs and keeps the rules of the sandbox it becomes, not those of the create that filled the pool", async () => {
  // A daemon of its own that says which creates took a pooled VM. Its pool is empty at first: this create
  // restores on its own and notes the shape, so the pool fills with its spec (rules B:80) …
  const pooled = new Set<unknown>();
  const log = {
    info: (msg: string, f?: Record<string, unknown>) => {
      if (msg === "VM created (warm, pooled)") pooled.add(f?.sandbox_id);
    },
    warn() {},
    error() {},
  };
  await daemon().close();
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), privateEgress: [NET], log });
  const first = spec({ egress: [`${B}:80`] });
  await daemon().create(first);
  await daemon().poolIdle();
  // … and this one takes the pooled VM.
  const second = spec({ egress: [`${A}:8080`] });
  await daemon().create(second);
  assert.deepEqual([...pooled], [second.sandbox_id]);
  await expect([`tcp:${A}:8080`], [`tcp:${B}:80`, `tcp:${A}:80`], second.sandbox_id);
  // What re-adoption reads back is the sandbox's list too.
  await daemon().close();
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), privateEgress: [NET] });
  await expect([`tcp:${A}:8080`], [`tcp:${B}:80`, `tcp:${A}:80`], second.sandbox_id);
  await daemon().destroy(first.sandbox_id);
  await daemon().destroy(second.sandbox_id);
});
