// Egress cost on one VM: guest → test-host TCP upload throughput with no rules, with 100 rules, and through
// the HTTP name proxy (as ratios to the unfiltered path), and the time a `setEgress` takes to be in force.
// The test host is a network namespace on 10.80.<n>.0/29 (a sink on 80 and 9100, a DNS server), listed as
// private egress; nothing is sent anywhere else.
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
    const r = await d.exec(
      id,
      { argv: ["python3", "-c", py] },
      {
        onStdout: (b) => secs.push(Number(b.toString().trim())),
      },
    );
    if (r.exit_code !== 0) throw new Error(`upload failed: exit ${r.exit_code}`);
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
  await d.destroy(id);
} finally {
  await d.close();
  teardown();
}
