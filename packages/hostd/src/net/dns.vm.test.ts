/**
 * Guest DNS and TLS on a real devbox:1 VM: names resolve through the sandbox's own resolver, a name that
 * does not exist fails at once, queries to any other DNS server are answered by ours (checked against an
 * address a test namespace owns, so nothing leaves this machine if the redirect fails), and the two
 * outside services this machine reaches (the Debian archive, the npm registry; through a TLS-intercepting
 * proxy whose CA the images carry) work: `apt-get install` and `npm install`.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/net/dns.vm.test.js
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { procGone } from "../sys/index.js";
import { openOpts, run, sh, spec, tempDataDir } from "../testutil.js";
import { resolverPid } from "./dns.js";
import { netnsName } from "./plan.js";

const IMAGE = "devbox:1";
const dataDir = tempDataDir("dns");
/** A namespace owning PROBE_IP, reachable from the root namespace: the "other DNS server". */
const PROBE_NS = "csbt-h10dns";
const PROBE_LINK = "csbt-h10d";
const PROBE_IP = "10.254.53.1";
let d: LocalHostDaemon;
let id = "";
let netns = "";

const ipCmd = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8", stdio: "pipe" });

function probeDown(): void {
  try {
    ipCmd("link", "del", PROBE_LINK);
  } catch {
    // absent
  }
  try {
    ipCmd("netns", "del", PROBE_NS);
  } catch {
    // absent
  }
}

before(async () => {
  probeDown();
  ipCmd("netns", "add", PROBE_NS);
  ipCmd("link", "add", PROBE_LINK, "type", "veth", "peer", "name", "eth0", "netns", PROBE_NS);
  ipCmd("addr", "add", "10.254.53.2/30", "dev", PROBE_LINK);
  ipCmd("link", "set", PROBE_LINK, "up");
  ipCmd("-n", PROBE_NS, "addr", "add", `${PROBE_IP}/30`, "dev", "eth0");
  ipCmd("-n", PROBE_NS, "link", "set", "eth0", "up");
  d = await LocalHostDaemon.open(openOpts(dataDir));
  await d.ensureImage(IMAGE);
  const s = spec({ image: IMAGE, mem_mib: 1024 });
  await d.create(s);
  id = s.sandbox_id;
  const rec = JSON.parse(readFileSync(join(dataDir, "hostd", "vms", id, "vm.json"), "utf8")) as {
    slot: number;
  };
  netns = netnsName(rec.slot);
});

after(async () => {
  await d?.close();
  probeDown();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Milliseconds the guest's own clock says `script` took, and its exit code. */
async function timed(script: string): Promise<{ ms: number; code: number; out: string }> {
  const r = await run(d, id, [
    "sh",
    "-c",
    `s=$(date +%s%N); ${script}; c=$?; e=$(date +%s%N); echo "ms=$(( (e-s)/1000000 )) code=$c"`,
  ]);
  const m = /ms=(\d+) code=(\d+)\s*$/.exec(r.stdout);
  assert.ok(m, r.stdout + r.stderr);
  return { ms: Number(m[1]), code: Number(m[2]), out: r.stdout };
}

test("names resolve in the guest as on the host; a nonexistent name fails at once", async () => {
  const host = execFileSync("getent", ["ahostsv4", "deb.debian.org"], { encoding: "utf8" }).split(/\s/)[0];
  const guest = await sh(d, id, "getent ahostsv4 deb.debian.org");
  assert.equal(guest.split(/\s/)[0], host, guest);
  assert.match(await sh(d, id, "cat /etc/resolv.conf"), /^nameserver 169\.254\.0\.22$/m);
  const nx = await timed("getent hosts nonexistent.invalid");
  assert.equal(nx.code, 2, `getent exits 2 for a name that does not exist: ${nx.out}`);
  assert.ok(nx.ms < 2000, `NXDOMAIN took ${nx.ms} ms`);
});

test("a query to another DNS server is answered by the sandbox's resolver", async () => {
  const counter = () => {
    const t = execFileSync("ip", ["netns", "exec", netns, "nft", "list", "table", "inet", "createos_dns"], {
      encoding: "utf8",
    });
    return Number(/counter packets (\d+)/.exec(t)?.[1]);
  };
  const before = counter();
  const js = `const r=new (require("dns").promises.Resolver)({timeout:3000,tries:1});r.setServers(["${PROBE_IP}"]);r.resolve4("deb.debian.org").then(a=>console.log(a.join(",")),e=>{console.error(e.code);process.exit(1)})`;
  const r = await run(d, id, ["node", "-e", js]);
  assert.equal(r.code, 0, r.stderr);
  const host = execFileSync("getent", ["ahostsv4", "deb.debian.org"], { encoding: "utf8" }).split(/\s/)[0];
  assert.equal(r.stdout.trim().split(",")[0], host);
  assert.ok(counter() > before, "the redirect rule counted the query");
});

test("apt-get update && apt-get install -y cowsay", async () => {
  const r = await run(d, id, ["sh", "-c", "apt-get update 2>&1 && apt-get install -y cowsay 2>&1"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  // apt-get update exits 0 even when it could fetch nothing
  assert.doesNotMatch(r.stdout, /^(Err:|W: Failed|E: )/m, r.stdout);
  assert.match(await sh(d, id, "/usr/games/cowsay moo"), /< moo >/);
});

test("npm install of a small package", async () => {
  const out = await sh(
    d,
    id,
    'cd "$(mktemp -d)" && npm install --no-audit --no-fund --loglevel=error is-number 2>&1 && node -e \'console.log(require("is-number")(5))\'',
  );
  assert.match(out, /^true$/m, out);
});

/** Sends `n` queries for `localhost` (answered from /etc/hosts, nothing goes upstream), one at a time or all at once. */
const QUERIES_PY = `
import socket, struct, sys
n, together = int(sys.argv[1]), sys.argv[2] == "together"
name = b"".join(bytes([len(p)]) + p for p in b"localhost".split(b".")) + b"\\0"
q = lambda i: struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("169.254.0.22", 53))
s.settimeout(1.0)
ok = 0
for i in range(n):
    s.send(q(i))
    if not together:
        try:
            s.recv(512); ok += 1
        except socket.timeout:
            pass
if together:
    s.settimeout(0.5)
    try:
        while True:
            s.recv(512); ok += 1
    except socket.timeout:
        pass
print("answered=%d" % ok)
`;

async function queries(n: number, how: "one by one" | "together"): Promise<number> {
  const r = await run(d, id, [
    "python3",
    "-c",
    QUERIES_PY,
    String(n),
    how === "together" ? "together" : "each",
  ]);
  const m = /answered=(\d+)/.exec(r.stdout);
  assert.ok(m, r.stdout + r.stderr);
  return Number(m[1]);
}

test("the guest's DNS is its egress: counted, stopped by the quota; a flood is cut at the rate cap", async () => {
  await d.takeNetUsage(id);
  assert.equal(await queries(20, "one by one"), 20);
  const u = await d.takeNetUsage(id);
  // a query for localhost is 55 bytes on the wire (IP + UDP + 27), its answer 71
  assert.ok(u.egress_bytes >= 20 * 55 && u.ingress_bytes >= 20 * 71, JSON.stringify(u));
  await d.setBandwidth(id, 0);
  assert.equal(await queries(3, "one by one"), 0, "past the quota the resolver is out of reach too");
  await d.setBandwidth(id, -1);
  assert.equal(await queries(3, "one by one"), 3);
  const dropped = () => {
    const t = execFileSync("ip", ["netns", "exec", netns, "nft", "list", "table", "inet", "createos_dns"], {
      encoding: "utf8",
    });
    return Number(/limit rate over .* counter packets (\d+)/.exec(t)?.[1]);
  };
  const before = dropped();
  await queries(3000, "together");
  // the burst (1,000) and 200 a second pass; sending 3,000 takes the guest well under 5 s
  assert.ok(dropped() - before >= 1000, `dropped ${dropped() - before} of 3000`);
});

test("a restarted host daemon keeps the resolver (the namespace outlives the daemon)", async () => {
  const pid = resolverPid(netns);
  assert.ok(pid, "the sandbox's namespace runs a resolver");
  await d.close();
  // No namespace pool from here on: a refill would set up the slot the next test's destroy frees again,
  // under the same namespace name and with a resolver of its own, and that one is not the sandbox's.
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), netPool: 0 });
  assert.equal(resolverPid(netns), pid);
  assert.match(await sh(d, id, "getent hosts registry.npmjs.org"), /registry\.npmjs\.org/);
});

test("destroy stops the sandbox's resolver", async () => {
  const pid = resolverPid(netns);
  assert.ok(pid, "the sandbox's namespace runs a resolver");
  await d.destroy(id);
  assert.ok(procGone(pid), `resolver ${pid} outlived its sandbox`);
  assert.equal(resolverPid(netns), undefined);
});
