// Egress cost on one VM: guest → test-host TCP upload throughput with no rules, with 100 rules, and through
// the HTTP name proxy (as ratios to the unfiltered path), and the time a `setEgress` takes to be in force.
// Then a second VM and a private network (issue 12): member → member ping p50 and upload throughput, as
// ratios to guest → test host, and the time a `setNetworks` takes.
// The test host is a network namespace on 10.80.<n>.0/29 (a sink on 80 and 9100, a DNS server), listed as
// private egress; the network is 10.242.<n>.0/24 between the two VMs; nothing is sent anywhere else.
//
//   flock /tmp/csb-vmtest.lock node bench/network/run.js [MiB=32] [reps=3]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalHostDaemon } from "../../packages/hostd/dist/daemon.js";
import { dnsServerPy, freeOctet, sinkPy, testHostNs } from "../../packages/hostd/dist/net/testhosts.js";
import { openOpts, p50, spec } from "../engine/lib.js";

const MIB = Number(process.argv[2] ?? 32);
const REPS = Number(process.argv[3] ?? 3);
const IMAGE = process.env.CREATEOS_TEST_IMAGE ?? "debian:12";
const n = freeOctet(["10.80"]);
const [GW, A, DNS] = [1, 2, 4].map((h) => `10.80.${n}.${h}`);
const NS = `csbb-net${process.pid}`;
const VETH = `csbbn${process.pid}`;
const dir = mkdtempSync(join(tmpdir(), "csb-bench-net-"));

/** Guest: upload MIB MiB to host:port (after `head`, if any) and wait for the sink's close; prints seconds. */
const upload = (host, port, head = "") => `
import socket, time
s = socket.create_connection(("${host}", ${port}), timeout=30)
t0 = time.monotonic()
s.sendall(b"${head}")
buf = b"x" * 65536
for _ in range(${MIB * 16}):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print("%.4f" % (time.monotonic() - t0))
`;

/** Guest: 20 ICMP echoes to host (raw socket: images need not have ping); prints the round trips, ms. */
const pingPy = (host) => `
import os, socket, struct, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
ident, out = os.getpid() & 0xffff, []
for seq in range(1, 21):
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"x" * 56
    p = struct.pack("!BBHHH", 8, 0, csum(h), ident, seq) + b"x" * 56
    t0 = time.monotonic()
    s.sendto(p, ("${host}", 0))
    while True:
        d, a = s.recvfrom(2000)
        o = (d[0] & 15) * 4
        if d[o] == 0 and a[0] == "${host}" and struct.unpack("!H", d[o + 6:o + 8])[0] == seq:
            break
    out.append((time.monotonic() - t0) * 1000)
    time.sleep(0.05)
print(" ".join("%.3f" % x for x in out))
`;

async function pingP50(d, id, host) {
  const out = [];
  const err = [];
  const r = await d.exec(
    id,
    { argv: ["python3", "-c", pingPy(host)] },
    { onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) },
  );
  if (r.exit_code !== 0) throw new Error(`ping failed: exit ${r.exit_code}: ${Buffer.concat(err)}`);
  return p50(Buffer.concat(out).toString().trim().split(" ").map(Number));
}

/** A membership of the bench's network for `ip`, the other VM its peer. */
const member = (ip, peer, peerIp) => ({
  network_id: "net_bench",
  network_name: "bench",
  vni: 990000 + (process.pid % 9000),
  cidr: `10.242.${n}.0/24`,
  ip,
  peers: [{ sandbox_id: peer, name: "peer", ip: peerIp }],
  remotes: [],
});

let down = () => undefined;
function setup() {
  const programs = [sinkPy(80), sinkPy(9100), dnsServerPy(DNS, { "web-a.test": A })];
  down = testHostNs(NS, VETH, GW, [A, DNS], programs);
}

function teardown() {
  down();
  rmSync(dir, { recursive: true, force: true });
}

async function mbps(d, id, py) {
  const secs = [];
  for (let i = 0; i < REPS; i++) {
    const err = [];
    const r = await d.exec(
      id,
      { argv: ["python3", "-c", py] },
      {
        onStdout: (b) => secs.push(Number(b.toString().trim())),
        onStderr: (b) => err.push(b),
      },
    );
    if (r.exit_code !== 0) throw new Error(`upload failed: exit ${r.exit_code}: ${Buffer.concat(err)}`);
  }
  return MIB / p50(secs);
}

setup();
process.env.CREATEOS_SANDBOX_DNS_SERVERS = DNS;
const d = await LocalHostDaemon.open(openOpts(IMAGE, dir, { privateEgress: [`10.80.${n}.0/29`] }));
try {
  await d.ensureImage(IMAGE);
  const s = spec(IMAGE, 1024);
  await d.create(s);
  const id = s.sandbox_id;
  const open = await mbps(d, id, upload(A, 9100));
  // 99 rules that match nothing here (documentation-free public addresses, never contacted) and A
  const many = Array.from({ length: 99 }, (_, i) => `8.${8 + (i % 50)}.${i}.0/24:${1000 + i}`);
  await d.setEgress(id, [...many, `${A}:9100`]);
  const hundred = await mbps(d, id, upload(A, 9100));
  await d.setEgress(id, ["web-a.test"]);
  const proxied = await mbps(
    d,
    id,
    upload("web-a.test", 80, "POST / HTTP/1.1\\r\\nHost: web-a.test\\r\\n\\r\\n"),
  );
  const puts = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await d.setEgress(id, i % 2 ? [A] : [`${A}:9100`, ...many]);
    puts.push(performance.now() - t0);
  }
  const namePuts = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await d.setEgress(id, i % 2 ? ["web-a.test"] : ["web-a.test", "other.test"]);
    namePuts.push(performance.now() - t0);
  }
  const row = (what, v) => `| ${what} | ${v.toFixed(1)} MB/s | ${(v / open).toFixed(2)} |`;
  console.log(
    `upload of ${MIB} MiB, p50 of ${REPS}, guest → test host (${IMAGE}, ${process.env.CREATEOS_ACCEL ?? "auto"})`,
  );
  console.log("| path | throughput | ratio |\n|---|---|---|");
  console.log(row("no rules", open));
  console.log(row("100 rules (address and port)", hundred));
  console.log(row("through the HTTP name proxy", proxied));
  console.log(
    `setEgress in force (address rules): p50 ${p50(puts).toFixed(1)} ms, max ${Math.max(...puts).toFixed(1)} ms`,
  );
  console.log(`setEgress with a name change (resolver restart): p50 ${p50(namePuts).toFixed(1)} ms`);
  // The private network: a second VM with a sink; the first joins live.
  const s2 = spec(IMAGE, 1024);
  const [ip1, ip2] = [`10.242.${n}.5`, `10.242.${n}.6`];
  await d.create({ ...s2, networks: [member(ip2, id, ip1)] });
  await d.exec(s2.sandbox_id, { argv: ["sh", "-c", `nohup python3 -c '${sinkPy(9100)}' >/dev/null 2>&1 &`] });
  const joins = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await d.setNetworks(id, i % 2 ? [] : [member(ip1, s2.sandbox_id, ip2)]);
    joins.push(performance.now() - t0);
  }
  // The sink is up once a connection to it is accepted.
  const wait = `import socket, time
for _ in range(100):
    try:
        socket.create_connection(("${ip2}", 9100), timeout=1).close()
        break
    except OSError:
        time.sleep(0.2)
`;
  await d.exec(id, { argv: ["python3", "-c", wait] });
  const overlay = await mbps(d, id, upload(ip2, 9100));
  // The name rules above would refuse ICMP to the test host (overlay traffic is exempt from them).
  await d.setEgress(id, ["*"]);
  const pingHost = await pingP50(d, id, A);
  const pingPeer = await pingP50(d, id, ip2);
  console.log(row("member → member (private network)", overlay));
  console.log(
    `ping p50: guest → test host ${pingHost.toFixed(2)} ms, member → member ${pingPeer.toFixed(2)} ms (ratio ${(pingPeer / pingHost).toFixed(2)})`,
  );
  console.log(
    `setNetworks (join / leave alternating): p50 ${p50(joins).toFixed(1)} ms, max ${Math.max(...joins).toFixed(1)} ms`,
  );
  await d.destroy(s2.sandbox_id);
  await d.destroy(id);
} finally {
  // Whatever failed, no VM (and so no network namespace) is left behind.
  for (const v of await d.list()) await d.destroy(v.sandbox_id).catch(() => undefined);
  await d.close();
  teardown();
}
