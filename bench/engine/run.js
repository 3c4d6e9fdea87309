#!/usr/bin/env node
// Sandbox engine benchmark: real VMs through LocalHostDaemon (packages/hostd/dist), p50/p95 per shape.
//
//   npx tsc -b packages/hostd && node bench/engine/run.js [--reps 20] [--cold-reps 5] [--image debian:12]
//        [--shapes 256,2048] [--pss-vms 20] [--pss-forks 10] [--json out.json]
//
// Prints a markdown table. Everything runs on this host under whatever accelerator the daemon probed.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { LocalHostDaemon } from "../../packages/hostd/dist/index.js";

const { values: args } = parseArgs({
  options: {
    reps: { type: "string", default: "20" },
    "cold-reps": { type: "string", default: "5" },
    image: { type: "string", default: "debian:12" },
    shapes: { type: "string", default: "256,2048" },
    "pss-vms": { type: "string", default: "20" },
    "pss-forks": { type: "string", default: "10" },
    "file-mib": { type: "string", default: "64" },
    json: { type: "string" },
  },
});
const REPS = Number(args.reps);
const COLD_REPS = Number(args["cold-reps"]);
const IMAGE = args.image;
const SHAPES = args.shapes.split(",").map(Number);
const PSS_VMS = Number(args["pss-vms"]);
const PSS_FORKS = Number(args["pss-forks"]);
const FILE_MIB = Number(args["file-mib"]);

const dataDir = mkdtempSync(join(tmpdir(), "csb-bench-"));
const d = await LocalHostDaemon.open({ dataDir });
let seq = 0;
const log = (...a) => process.stderr.write(`${a.join(" ")}\n`);

function shapeOf(mem) {
  return { vcpu: mem >= 2048 ? 2 : 1, mem_mib: mem };
}
function spec(mem, over = {}) {
  const id = `bench-${process.pid}-${++seq}`;
  return { sandbox_id: id, hostname: id, image: IMAGE, disk_mib: 4096, envs: {}, ...shapeOf(mem), ...over };
}
function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const p50 = (xs) => pct(xs, 50);
const p95 = (xs) => pct(xs, 95);
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : "–");
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");

async function sh(id, script) {
  const out = [];
  const r = await d.exec(id, { argv: ["sh", "-c", script] }, { onStdout: (c) => out.push(Buffer.from(c)) });
  if (r.exit_code !== 0) throw new Error(`${script}: exit ${r.exit_code} ${r.error ?? ""}`);
  return Buffer.concat(out).toString();
}
async function firstExec(id) {
  const r = await d.exec(id, { argv: ["true"] });
  if (r.exit_code !== 0) throw new Error("true failed");
}
function pss(pid) {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const rows = [];
const results = {};
function row(what, shape, xs, unit = "ms", note = "") {
  rows.push(`| ${what} | ${shape} | ${f0(p50(xs))} | ${f0(p95(xs))} | ${xs.length} | ${unit} | ${note} |`);
  results[`${what} ${shape}`] = { p50: p50(xs), p95: p95(xs), n: xs.length, unit, note };
}

try {
  await d.ensureImage(IMAGE, (p) => log("image:", p.phase, p.message ?? ""));
  // The first create of a shape boots cold and captures the warm snapshot; not counted.
  for (const mem of SHAPES) {
    const s = spec(mem);
    log(`warming ${mem} MiB…`);
    const rt = await d.create(s);
    log(`  first create (${rt.boot}) ${rt.spawn_ms} ms`);
    await d.destroy(s.sandbox_id);
  }

  for (const mem of SHAPES) {
    const shape = `${shapeOf(mem).vcpu} vCPU / ${mem} MiB`;
    // --- create warm vs cold
    const warm = [];
    const warmToExec = [];
    for (let i = 0; i < REPS; i++) {
      const s = spec(mem);
      const t0 = performance.now();
      const rt = await d.create(s);
      await firstExec(s.sandbox_id);
      warmToExec.push(performance.now() - t0);
      warm.push(rt.spawn_ms);
      await d.destroy(s.sandbox_id);
    }
    const cold = [];
    for (let i = 0; i < COLD_REPS; i++) {
      const s = spec(mem);
      const rt = await d.create(s, { cold: true });
      cold.push(rt.spawn_ms);
      await d.destroy(s.sandbox_id);
    }
    log(`create ${shape}: warm p50 ${f0(p50(warm))} cold p50 ${f0(p50(cold))}`);
    row(
      "create (warm snapshot)",
      shape,
      warm,
      "ms",
      `to agent ready + configured; first exec at p50 ${f0(p50(warmToExec))} ms`,
    );
    row("create (cold boot)", shape, cold, "ms", `warm is ${f1(p50(cold) / p50(warm))}× faster (p50)`);

    // --- pause (128 MiB dirtied in tmpfs before each) / resume to first exec
    const pauses = [];
    const resumes = [];
    const sizes = [];
    const s = spec(mem);
    await d.create(s);
    for (let i = 0; i < REPS; i++) {
      await sh(s.sandbox_id, "dd if=/dev/urandom of=/tmp/dirty bs=1M count=128 status=none");
      const t0 = performance.now();
      const snap = await d.pause(s.sandbox_id);
      pauses.push(performance.now() - t0);
      sizes.push(snap.size_bytes / 2 ** 20);
      const t1 = performance.now();
      await d.resume(snap, s);
      await firstExec(s.sandbox_id);
      resumes.push(performance.now() - t1);
    }
    log(`pause ${shape}: p50 ${f0(p50(pauses))}; resume p50 ${f0(p50(resumes))}`);
    row("pause (128 MiB dirty)", shape, pauses, "ms", `snapshot on disk p50 ${f0(p50(sizes))} MiB`);
    row("resume → first exec", shape, resumes, "ms");

    // --- fork from a paused parent
    await sh(s.sandbox_id, "rm -f /tmp/dirty");
    const parent = await d.pause(s.sandbox_id);
    const forks = [];
    for (let i = 0; i < REPS; i++) {
      const c = spec(mem);
      const t0 = performance.now();
      await d.fork(parent, c);
      await firstExec(c.sandbox_id);
      forks.push(performance.now() - t0);
      await d.destroy(c.sandbox_id);
    }
    row("fork → first exec", shape, forks, "ms");
    await d.resume(parent, s);

    // --- exec `true` through the daemon vs the agent's own spawn time
    const execMs = [];
    const spawnMs = [];
    for (let i = 0; i < Math.max(REPS, 20); i++) {
      const r = await d.exec(s.sandbox_id, { argv: ["true"] });
      execMs.push(r.exec_ms);
      if (r.spawn_us !== undefined) spawnMs.push(r.spawn_us / 1000);
    }
    row(
      "exec `true` round trip",
      shape,
      execMs,
      "ms",
      `agent spawn_us p50 ${f1(p50(spawnMs))} ms → ratio ${f1(p50(execMs) / p50(spawnMs))}×`,
    );

    // --- file transfer
    const body = Buffer.alloc(FILE_MIB * 2 ** 20);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32LE((i * 2654435761) >>> 0, i);
    const up = [];
    const down = [];
    for (let i = 0; i < Math.min(REPS, 3); i++) {
      const t0 = performance.now();
      await d.writeFile(s.sandbox_id, "/root/xfer.bin", Readable.from([body]));
      up.push(FILE_MIB / ((performance.now() - t0) / 1000));
      const t1 = performance.now();
      const r = await d.readFile(s.sandbox_id, "/root/xfer.bin");
      let n = 0;
      for await (const c of r.body) n += c.length;
      if (n !== body.length) throw new Error(`download size ${n}`);
      down.push(FILE_MIB / ((performance.now() - t1) / 1000));
    }
    row(`upload ${FILE_MIB} MiB`, shape, up, "MB/s");
    row(`download ${FILE_MIB} MiB`, shape, down, "MB/s");
    await d.destroy(s.sandbox_id);
  }

  // --- memory: idle 256 MiB sandboxes, and forks of one parent
  if (PSS_VMS > 0) {
    const ids = [];
    for (let i = 0; i < PSS_VMS; i++) {
      const s = spec(256);
      await d.create(s);
      ids.push(s.sandbox_id);
    }
    await sleep(5000);
    const list = await d.list();
    const each = list.filter((v) => ids.includes(v.sandbox_id)).map((v) => pss(v.pid));
    const total = each.reduce((a, b) => a + b, 0);
    row(`PSS of ${PSS_VMS} idle sandboxes`, "1 vCPU / 256 MiB", each, "MiB each", `total ${f0(total)} MiB`);
    for (const id of ids) await d.destroy(id);
  }
  if (PSS_FORKS > 0) {
    const p = spec(256);
    await d.create(p);
    await sh(p.sandbox_id, "dd if=/dev/urandom of=/tmp/state bs=1M count=64 status=none");
    const one = pss((await d.list()).find((v) => v.sandbox_id === p.sandbox_id).pid);
    const snap = await d.pause(p.sandbox_id);
    const kids = [];
    for (let i = 0; i < PSS_FORKS; i++) {
      const c = spec(256);
      await d.fork(snap, c);
      kids.push(c.sandbox_id);
    }
    await sleep(5000);
    const list = await d.list();
    const each = list.filter((v) => kids.includes(v.sandbox_id)).map((v) => pss(v.pid));
    const total = each.reduce((a, b) => a + b, 0);
    row(
      `PSS of ${PSS_FORKS} forks of one parent`,
      "1 vCPU / 256 MiB",
      each,
      "MiB each",
      `total ${f0(total)} MiB = ${f1(total / one)}× the parent's ${f0(one)} MiB`,
    );
    for (const id of kids) await d.destroy(id);
    await d.deleteSnapshot(snap);
  }

  const info = await d.info();
  const cpu = cpus()[0]?.model ?? "?";
  console.log(`\n### Engine benchmark — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`);
  console.log(
    `Host: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, accel **${info.accel}**, image \`${IMAGE}\`, reps ${REPS} (cold boots ${COLD_REPS}).\n`,
  );
  console.log("| what | shape | p50 | p95 | n | unit | notes |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(r);
  if (args.json) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(
      args.json,
      JSON.stringify({ date: new Date().toISOString(), accel: info.accel, results }, null, 2),
    );
  }
} finally {
  for (const v of await d.list()) await d.destroy(v.sandbox_id).catch(() => {});
  await d.close();
  rmSync(dataDir, { recursive: true, force: true });
}
