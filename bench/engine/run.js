#!/usr/bin/env node
// Sandbox engine benchmark: real VMs through LocalHostDaemon (packages/hostd/dist), p50/p95 per shape.
//
//   npx tsc -b packages/hostd && node bench/engine/run.js [--reps 20] [--cold-reps 5] [--image debian:12]
//        [--shapes 256,2048] [--pss-vms 20] [--pss-forks 10] [--json out.json]
//   node bench/engine/run.js --remote [--reps 30] [--shapes 256] [--file-mib 64] [--json out.json]
//
// Prints a markdown table. Everything runs on this host under whatever accelerator the daemon probed.
// `--remote` is the paired run of paired.js instead: the same operations on an in-process daemon and,
// interleaved, on a daemon in another process over HTTP, with the ratio of the two.
import { mkdtempSync, readFileSync, rmSync, statSync, statfsSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { LocalHostDaemon } from "../../packages/hostd/dist/index.js";
import { bareRestore, dropTap, makeTap } from "./bare.js";
import {
  DIRTY,
  f0,
  f1,
  f2,
  fileBody,
  firstExec as firstExecIn,
  log,
  openOpts,
  p50,
  p95,
  sh as shIn,
  shapeOf,
  sleep,
  spec as specFor,
} from "./lib.js";

const { values: args } = parseArgs({
  options: {
    reps: { type: "string" },
    "cold-reps": { type: "string", default: "5" },
    image: { type: "string", default: "debian:12" },
    shapes: { type: "string" },
    "pss-vms": { type: "string", default: "20" },
    "pss-forks": { type: "string", default: "10" },
    "file-mib": { type: "string", default: "64" },
    json: { type: "string" },
    remote: { type: "boolean", default: false },
  },
});
// The paired run measures two sides: one shape (30 reps each, for ratios steadier than the shared
// machine's noise) keeps it near 7 minutes under TCG.
const REPS = Number(args.reps ?? (args.remote ? "30" : "20"));
const COLD_REPS = Number(args["cold-reps"]);
const IMAGE = args.image;
const SHAPES = (args.shapes ?? (args.remote ? "256" : "256,2048")).split(",").map(Number);
const PSS_VMS = Number(args["pss-vms"]);
const PSS_FORKS = Number(args["pss-forks"]);
const FILE_MIB = Number(args["file-mib"]);
if (args.remote) {
  const { runPaired } = await import("./paired.js");
  await runPaired({ reps: REPS, image: IMAGE, shapes: SHAPES, fileMib: FILE_MIB, json: args.json });
  // Its daemons are closed and its child has exited; nothing below (the in-process run) is wanted.
  process.exit(0);
}

const load0 = loadavg()[0];
const dataDir = mkdtempSync(join(tmpdir(), "csb-bench-"));
const dataDir0 = mkdtempSync(join(tmpdir(), "csb-bench0-"));
// The default daemon keeps one restored VM ready per recent shape; d0 has no pool, so its creates
// restore the warm snapshot on demand. Both rows are reported.
const d = await LocalHostDaemon.open(openOpts(IMAGE, dataDir));
const d0 = await LocalHostDaemon.open(openOpts(IMAGE, dataDir0, { warmPool: 0 }));

const spec = (mem, over) => specFor(IMAGE, mem, over);
// The snapshot store the daemon set up (snapshot/store.ts): an XFS image is a mount on <dataDir>/hostd.
const storeKind = (() => {
  const esc = join(dataDir, "hostd").replace(/ /g, "\\040");
  const line = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .find((l) => l.split(" ")[4] === esc);
  return line ? `${line.split(" - ")[1]?.split(" ")[0]} image` : "the data dir's own filesystem";
})();
const sh = (id, script) => shIn(d, id, script);
const firstExec = (id) => firstExecIn(d, id);
function pss(pid) {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}
const rows = [];
const results = {};
function row(what, shape, xs, unit = "ms", note = "") {
  rows.push(`| ${what} | ${shape} | ${f0(p50(xs))} | ${f0(p95(xs))} | ${xs.length} | ${unit} | ${note} |`);
  results[`${what} ${shape}`] = { p50: p50(xs), p95: p95(xs), n: xs.length, unit, note };
}

await makeTap();
try {
  await d.ensureImage(IMAGE, (p) => log("image:", p.phase, p.message ?? ""));
  // The first create of a shape boots cold and captures the warm snapshot; not counted.
  for (const mem of SHAPES) {
    const s = spec(mem);
    log(`warming ${mem} MiB…`);
    const rt = await d.create(s);
    log(`  first create (${rt.boot}) ${rt.spawn_ms} ms`);
    await d.destroy(s.sandbox_id);
    const s0 = spec(mem);
    await d0.create(s0);
    await d0.destroy(s0.sandbox_id);
  }

  for (const mem of SHAPES) {
    const shape = `${shapeOf(mem).vcpu} vCPU / ${mem} MiB`;
    // --- create: pooled restore, on-demand restore, cold boot
    const pooled = [];
    const pooledToExec = [];
    for (let i = 0; i < REPS; i++) {
      await d.poolIdle();
      const s = spec(mem);
      const t0 = performance.now();
      const rt = await d.create(s);
      await firstExec(s.sandbox_id);
      pooledToExec.push(performance.now() - t0);
      pooled.push(rt.spawn_ms);
      await d.destroy(s.sandbox_id);
    }
    const warm = [];
    const warmToExec = [];
    for (let i = 0; i < REPS; i++) {
      const s = spec(mem);
      const t0 = performance.now();
      const rt = await d0.create(s);
      await d0.exec(s.sandbox_id, { argv: ["true"] });
      warmToExec.push(performance.now() - t0);
      warm.push(rt.spawn_ms);
      await d0.destroy(s.sandbox_id);
    }
    const cold = [];
    for (let i = 0; i < COLD_REPS; i++) {
      const s = spec(mem);
      const rt = await d.create(s, { cold: true });
      cold.push(rt.spawn_ms);
      await d.destroy(s.sandbox_id);
    }
    log(`create ${shape}: pooled p50 ${f0(p50(pooled))} warm p50 ${f0(p50(warm))} cold p50 ${f0(p50(cold))}`);
    row(
      "create (warm, pooled restore)",
      shape,
      pooled,
      "ms",
      `+ first exec: p50 ${f0(p50(pooledToExec))} ms; ${f1(p50(cold) / p50(pooled))}× faster than cold`,
    );
    row(
      "create (warm snapshot restored on demand)",
      shape,
      warm,
      "ms",
      `+ first exec: p50 ${f0(p50(warmToExec))} ms; ${f1(p50(cold) / p50(warm))}× faster than cold`,
    );
    row("create (cold boot)", shape, cold, "ms", "boot to agent ready + configured");

    // --- pause (128 MiB dirtied in tmpfs before each) / resume to first exec
    const pauses = [];
    const resumes = [];
    const bareHello = [];
    const bareExec = [];
    const bareWall = [];
    const resumeWall = [];
    const sizes = [];
    const s = spec(mem);
    await d.create(s);
    for (let i = 0; i < REPS; i++) {
      await sh(s.sandbox_id, DIRTY);
      const t0 = performance.now();
      const snap = await d.pause(s.sandbox_id);
      pauses.push(performance.now() - t0);
      sizes.push(snap.size_bytes / 2 ** 20);
      // The floor: the same snapshot restored by a bare QEMU (bare.js), to its agent's hello and first exec.
      const bare = await bareRestore(dataDir, snap.snapshot_id);
      bareHello.push(bare.helloMs);
      bareExec.push(bare.execMs);
      bareWall.push(bare.execWallMs);
      const t1 = performance.now();
      await d.resume(snap, s);
      const r = await firstExec(s.sandbox_id);
      resumes.push(performance.now() - t1);
      resumeWall.push((r.wall_us ?? Number.NaN) / 1000);
    }
    log(`pause ${shape}: p50 ${f0(p50(pauses))}; resume p50 ${f0(p50(resumes))}`);
    row("pause (128 MiB dirty)", shape, pauses, "ms", `snapshot on disk p50 ${f0(p50(sizes))} MiB`);
    const vsBare = (xs) =>
      `${f2(p50(xs) / p50(bareHello))}× bare → answer, ${f2(p50(xs) / p50(bareExec))}× bare → exec`;
    row(
      "bare QEMU restore → first agent answer",
      shape,
      bareHello,
      "ms",
      "bench/engine/bare.js: no jail, no daemon",
    );
    row(
      "bare QEMU restore → first exec",
      shape,
      bareExec,
      "ms",
      `the same QEMU, its first \`true\`: agent wall p50 ${f0(p50(bareWall))} ms`,
    );
    row(
      "resume → first exec",
      shape,
      resumes,
      "ms",
      `${vsBare(resumes)}; first exec's agent wall p50 ${f0(p50(resumeWall))} ms`,
    );

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
    row("fork → first exec", shape, forks, "ms", vsBare(forks));
    // A fork's RAM file is a clone of its parent's on a reflink store (an ordinary VM: its pause and
    // resume are as above); with CREATEOS_SANDBOX_FORK_RAM=map its first pause writes its RAM into the
    // state stream and the resume after it loads it into a RAM file of its own (snapshot/pause.ts).
    const fpause = [];
    const fresume = [];
    const fsizes = [];
    for (let i = 0; i < Math.min(REPS, 3); i++) {
      const c = spec(mem);
      await d.fork(parent, c);
      await sh(c.sandbox_id, DIRTY);
      const t0 = performance.now();
      const snap = await d.pause(c.sandbox_id);
      fpause.push(performance.now() - t0);
      fsizes.push(snap.size_bytes / 2 ** 20);
      const t1 = performance.now();
      await d.resume(snap, c);
      await firstExec(c.sandbox_id);
      fresume.push(performance.now() - t1);
      await d.destroy(c.sandbox_id);
    }
    row(
      "a fork's first pause (128 MiB dirty)",
      shape,
      fpause,
      "ms",
      `snapshot on disk p50 ${f0(p50(fsizes))} MiB`,
    );
    row("resume of it → first exec", shape, fresume, "ms", "");
    await d.resume(parent, s);

    // --- exec `true` through the daemon vs the agent's own spawn time
    const execMs = [];
    const spawnMs = [];
    const wallMs = [];
    for (let i = 0; i < Math.max(REPS, 20); i++) {
      const r = await d.exec(s.sandbox_id, { argv: ["true"] });
      execMs.push(r.exec_ms);
      if (r.spawn_us !== undefined) spawnMs.push(r.spawn_us / 1000);
      // wall_us: the agent's own share (OPEN received → exit seen and reported), when the agent sends it.
      if (typeof r.wall_us === "number") wallMs.push(r.wall_us / 1000);
    }
    const vsWall = wallMs.length
      ? `; agent wall p50 ${f1(p50(wallMs))} ms → host stack adds ${f1(p50(execMs) - p50(wallMs))} ms (${f1(p50(execMs) / p50(wallMs))}×)`
      : "";
    row(
      "exec `true` round trip",
      shape,
      execMs,
      "ms",
      `agent spawn_us p50 ${f1(p50(spawnMs))} ms → ${f1(p50(execMs) / p50(spawnMs))}×${vsWall}`,
    );

    // --- file transfer
    const body = fileBody(FILE_MIB);
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
    await sh(p.sandbox_id, DIRTY.replace("n=128", "n=64"));
    const one = pss((await d.list()).find((v) => v.sandbox_id === p.sandbox_id).pid);
    const snap = await d.pause(p.sandbox_id);
    const store = join(dataDir, "hostd");
    const parentRam = statSync(join(store, "snapshots", snap.snapshot_id, "ram")).blocks * 512;
    const used = () => {
      const f = statfsSync(store);
      return (f.blocks - f.bfree) * f.bsize;
    };
    const used0 = used();
    const kids = [];
    for (let i = 0; i < PSS_FORKS; i++) {
      const c = spec(256);
      await d.fork(snap, c);
      kids.push(c.sandbox_id);
    }
    await sleep(5000);
    // Space the forks took on the store, once their guests' first writes reached it (sync): what a
    // reflink fork costs on disk. `du` would count each clone's shared blocks again.
    const { execFileSync } = await import("node:child_process");
    execFileSync("sync", ["-f", store]);
    const grown = (used() - used0) / 2 ** 20;
    const ramFiles = kids.map((id) => statSync(join(store, "vms", id, "ram")).blocks * 512);
    const du = ramFiles.reduce((a, b) => a + b, 0) / 2 ** 20;
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
    row(
      `disk taken by ${PSS_FORKS} forks of one parent`,
      "1 vCPU / 256 MiB",
      [grown],
      "MiB",
      `${f1(grown / (parentRam / 2 ** 20))}× the parent's RAM file (${f0(parentRam / 2 ** 20)} MiB allocated); their RAM files' allocated blocks (du) sum to ${f0(du)} MiB, shared extents counted per file; store: ${storeKind}`,
    );
    for (const id of kids) await d.destroy(id);
    await d.deleteSnapshot(snap);
  }

  const info = await d.info();
  const cpu = cpus()[0]?.model ?? "?";
  console.log(`\n### Engine benchmark — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`);
  console.log(
    `Host: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, accel **${info.accel}**, image \`${IMAGE}\`, snapshot store: ${storeKind}, reps ${REPS} (cold boots ${COLD_REPS}); 1-min load average ${load0.toFixed(1)} at start, ${loadavg()[0].toFixed(1)} at end (the 2 cores are shared).\n`,
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
  for (const v of await d0.list()) await d0.destroy(v.sandbox_id).catch(() => {});
  await d.close();
  await d0.close();
  await dropTap();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(dataDir0, { recursive: true, force: true });
}
