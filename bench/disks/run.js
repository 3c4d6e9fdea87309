#!/usr/bin/env node
// S3 disk benchmark: a real VM with a disk mounted through the host daemon's proxy, against s3rver (behind
// its SigV4-checking front) on a test host in its own namespace; the same operations on the guest's own
// disk for the ratio.
//
//   npx tsc -b packages/hostd && flock /tmp/csb-vmtest.lock node bench/disks/run.js [--mib 64] [--files 100]
//
// Sequential write (dd, then sync) and read (caches dropped first) in MB/s, and small-file creates
// (4 KiB each, closed one by one: s3fs uploads on close) and stats per second. Prints a markdown table.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { S3_KEYS } from "../../packages/hostd/dist/disks/s3test.js";
import { LocalHostDaemon } from "../../packages/hostd/dist/index.js";
import { f1, f2, log, openOpts, sh, spec } from "../engine/lib.js";

const { values: args } = parseArgs({
  options: { mib: { type: "string", default: "64" }, files: { type: "string", default: "100" } },
});
const MIB = Number(args.mib);
const FILES = Number(args.files);
const IMAGE = "devbox:1";
const NS = "csbt-bdisk";
const LINK = "csbt-bdsk";
const IP = "10.254.55.1";
const s3test = fileURLToPath(new URL("../../packages/hostd/dist/disks/s3test.js", import.meta.url));
const ip = (...a) => execFileSync("ip", a, { stdio: "pipe" });
const down = () => {
  for (const a of [
    ["link", "del", LINK],
    ["netns", "del", NS],
  ]) {
    try {
      ip(...a);
    } catch {}
  }
};

down();
for (const c of [
  ["netns", "add", NS],
  ["link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", NS],
  ["addr", "add", "10.254.55.2/30", "dev", LINK],
  ["link", "set", LINK, "up"],
  ["-n", NS, "addr", "add", `${IP}/30`, "dev", "eth0"],
  ["-n", NS, "link", "set", "eth0", "up"],
  ["-n", NS, "link", "set", "lo", "up"],
])
  ip(...c);
const script = `const m = await import(${JSON.stringify(s3test)}); await m.startS3("${IP}", ["bench"], 9000); console.log("ready");`;
const s3 = spawn("ip", ["netns", "exec", NS, process.execPath, "--input-type=module", "-e", script], {
  stdio: ["ignore", "pipe", "inherit"],
});
await new Promise((r) => s3.stdout.on("data", (c) => c.toString().includes("ready") && r()));

const dir = mkdtempSync(join(tmpdir(), "bench-disks-"));
const d = await LocalHostDaemon.open(openOpts(IMAGE, dir));
const load0 = loadavg()[0];
const rows = [];
let accel = "?";
try {
  accel = (await d.info()).accel;
  await d.ensureImage(IMAGE);
  const s = spec(IMAGE, 2048);
  await d.create(s);
  const id = s.sandbox_id;
  await d.mountDisk(id, {
    disk_id: "disk_bench",
    mount_path: "/mnt/s3",
    bucket: "bench",
    endpoint: `http://${IP}:9000`,
    use_path_style: true,
    ...S3_KEYS,
  });
  const time = async (cmd) => {
    const out = await sh(d, id, `s=$(date +%s.%N); ${cmd}; e=$(date +%s.%N); echo "$s $e"`);
    const [a, b] = out.trim().split("\n").at(-1).split(" ").map(Number);
    return b - a;
  };
  for (const [where, path] of [
    ["guest disk", "/root/bench"],
    ["S3 disk", "/mnt/s3/bench"],
  ]) {
    await sh(d, id, `mkdir -p ${path}`);
    const w = await time(`dd if=/dev/zero of=${path}/big bs=1M count=${MIB} 2>/dev/null; sync`);
    await sh(d, id, "sync; echo 3 > /proc/sys/vm/drop_caches");
    const r = await time(`cat ${path}/big > /dev/null`);
    const c = await time(`for i in $(seq 1 ${FILES}); do head -c 4096 /dev/zero > ${path}/f$i; done; sync`);
    await sh(d, id, "echo 3 > /proc/sys/vm/drop_caches");
    const st = await time(`for i in $(seq 1 ${FILES}); do stat ${path}/f$i > /dev/null; done`);
    rows.push({ where, write: MIB / w, read: MIB / r, creates: FILES / c, stats: FILES / st });
    log(where, JSON.stringify(rows.at(-1)));
  }
  await d.unmountDisk(id, "/mnt/s3");
  await d.destroy(id);
} finally {
  await d.close();
  s3.kill();
  down();
  rmSync(dir, { recursive: true, force: true });
}
const [own, s3row] = rows;
console.log(
  `Host: accel ${(await import("node:os")).cpus().length} cores, image ${IMAGE}, ${MIB} MiB sequential, ${FILES} files of 4 KiB; 1-min load ${f1(load0)} at start, ${f1(loadavg()[0])} at end.\n`,
);
console.log("| | seq write MB/s | seq read MB/s | 4 KiB creates/s | stats/s |");
console.log("|---|---|---|---|---|");
for (const r of rows)
  console.log(`| ${r.where} | ${f1(r.write)} | ${f1(r.read)} | ${f1(r.creates)} | ${f1(r.stats)} |`);
console.log(
  `| S3 / guest | ${f2(s3row.write / own.write)} | ${f2(s3row.read / own.read)} | ${f2(s3row.creates / own.creates)} | ${f2(s3row.stats / own.stats)} |`,
);
