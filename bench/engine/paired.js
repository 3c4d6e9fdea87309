// The paired engine benchmark (`node bench/engine/run.js --remote`): every operation measured on an
// in-process LocalHostDaemon and on a LocalHostDaemon in another process (serve-daemon.js) reached through
// RemoteHostDaemon over HTTP on 127.0.0.1, in one run. Repetitions alternate which side goes first and
// every measurement starts with both warm pools idle, so shared-machine load drift falls on both sides.
// All times are taken here, by the caller, around the interface call: for the remote side they include
// the HTTP exchange, which is what is being compared. Where the daemon reports its own time (create's
// spawn_ms, exec's exec_ms) the notes give it too, so the wire's share is visible.
import { fork as forkProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { LocalHostDaemon } from "../../packages/hostd/dist/index.js";
import { RemoteHostDaemon } from "../../packages/protocol/dist/index.js";
import {
  DIRTY,
  drain,
  f0,
  f1,
  f2,
  fileBody,
  firstExec,
  log,
  openOpts,
  p50,
  p95,
  sh,
  shapeOf,
  spec,
} from "./lib.js";

/** Forks serve-daemon.js and connects to its two daemons. */
export async function startRemote(image) {
  const token = randomBytes(24).toString("hex");
  const child = forkProcess(new URL("./serve-daemon.js", import.meta.url), [], {
    env: { ...process.env, BENCH_IMAGE: image, BENCH_TOKEN: token },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const urls = await new Promise((resolve, reject) => {
    child.once("message", (m) => resolve(m.ready));
    child.once("exit", (code) => reject(new Error(`serve-daemon.js exited (${code}) before it listened`)));
  });
  let next = 0;
  const waiting = new Map();
  child.on("message", (m) => {
    waiting.get(m.id)?.();
    waiting.delete(m.id);
  });
  return {
    name: "remote",
    d: new RemoteHostDaemon(urls.pooled, { token }),
    d0: new RemoteHostDaemon(urls.onDemand, { token }),
    poolIdle: () =>
      new Promise((resolve) => {
        const id = ++next;
        waiting.set(id, resolve);
        child.send({ op: "poolIdle", id });
      }),
    async close() {
      await this.d.close();
      await this.d0.close();
      const exited = new Promise((r) => child.once("exit", r));
      child.send({ op: "close" });
      await exited;
    },
  };
}

export async function startLocal(image) {
  const dirs = [mkdtempSync(join(tmpdir(), "csb-bench-")), mkdtempSync(join(tmpdir(), "csb-bench0-"))];
  const d = await LocalHostDaemon.open(openOpts(image, dirs[0]));
  const d0 = await LocalHostDaemon.open(openOpts(image, dirs[1], { warmPool: 0 }));
  return {
    name: "in-process",
    d,
    d0,
    poolIdle: () => d.poolIdle(),
    async close() {
      for (const x of [d, d0]) {
        for (const v of await x.list()) await x.destroy(v.sandbox_id).catch(() => {});
        await x.close();
      }
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
}

const now = () => performance.now();
/** Milliseconds: one decimal below 10 (a JSON call is well under one), whole above. */
const fm = (x) => (x < 10 ? f1(x) : f0(x));

export async function runPaired({ reps, image, shapes, fileMib, json }) {
  const load0 = loadavg()[0];
  const local = await startLocal(image);
  let remote;
  const rows = [];
  const results = {};
  try {
    remote = await startRemote(image);
    const sides = [local, remote];
    const quiet = () => Promise.all(sides.map((t) => t.poolIdle()));
    // Samples per side: s[key] = [...]; `each` runs fn on both sides per repetition, alternating the order.
    for (const t of sides) t.s = {};
    const add = (t, key, v) => {
      t.s[key] ??= [];
      t.s[key].push(v);
    };
    const each = async (n, fn) => {
      for (let i = 0; i < n; i++)
        for (const t of i % 2 ? [remote, local] : [local, remote]) {
          await quiet();
          await fn(t, i);
        }
    };
    // A ratio of a sub-millisecond call says nothing about an operation: `list()` shows the fixed cost.
    const row = (what, shape, key, unit = "ms", note = "", ratioRow = true) => {
      const [a, b] = [local.s[key] ?? [], remote.s[key] ?? []];
      // Time ratio remote ÷ in-process; for a throughput it is in-process ÷ remote.
      const ratio = unit === "ms" ? p50(b) / p50(a) : p50(a) / p50(b);
      const delta = unit === "ms" ? `${f1(p50(b) - p50(a))}` : "";
      const verdict = !ratioRow ? "–" : `${f2(ratio)} ${ratio <= 1.1 ? "≤ 1.10" : "**> 1.10**"}`;
      const n = Math.min(a.length, b.length);
      // Repetition i of both sides ran back to back: the median of their ratios cancels slow drift in load.
      const perRep = a.slice(0, n).map((x, i) => (unit === "ms" ? b[i] / x : x / b[i]));
      const paired = ratioRow ? f2(p50(perRep)) : "–";
      rows.push(
        `| ${what} | ${shape} | ${fm(p50(a))} | ${fm(p95(a))} | ${fm(p50(b))} | ${fm(p95(b))} | ${n} | ${unit} | ${verdict} | ${paired} | ${delta} | ${note} |`,
      );
      results[`${what} ${shape}`] = { unit, ratio, pairedRatio: p50(perRep), inprocess: a, remote: b, note };
    };
    // Notes give parts of a row, p50 in-process / remote: the daemon's own report of the call (`own`), the
    // caller's time minus that (`wire`: the HTTP exchange, ~0 in-process), the first exec on its own.
    const parts = (...keys) =>
      `p50 in-process / remote: ${keys.map(([k, label]) => `${label} ${fm(p50(local.s[k] ?? []))} / ${fm(p50(remote.s[k] ?? []))}`).join("; ")} ms`;

    await local.d.ensureImage(image, (p) => log("image:", p.phase, p.message ?? ""));
    for (const mem of shapes) {
      // The first create of a shape boots cold and captures the warm snapshot; not counted.
      log(`warming ${mem} MiB…`);
      for (const t of sides)
        for (const x of [t.d, t.d0]) {
          const s = spec(image, mem);
          await x.create(s);
          await x.destroy(s.sandbox_id);
        }
    }

    for (const mem of shapes) {
      const shape = `${shapeOf(mem).vcpu} vCPU / ${mem} MiB`;
      log(`${shape}: calls`);
      await each(Math.max(reps, 50), async (t) => {
        const t0 = now();
        await t.d.list();
        add(t, "list", now() - t0);
      });
      row("`list()` call (no VM work)", shape, "list", "ms", "the fixed cost of one JSON call", false);

      log(`${shape}: create`);
      for (const [pool, x] of [
        ["pooled", "d"],
        ["restore", "d0"],
      ])
        await each(reps, async (t) => {
          const s = spec(image, mem);
          const t0 = now();
          const rt = await t[x].create(s);
          const t1 = now();
          await firstExec(t[x], s.sandbox_id);
          const t2 = now();
          await t[x].destroy(s.sandbox_id);
          add(t, `create-${pool}`, t1 - t0);
          add(t, `own-${pool}`, rt.spawn_ms);
          add(t, `wire-${pool}`, t1 - t0 - rt.spawn_ms);
          add(t, `exec1-${pool}`, t2 - t1);
          add(t, `create-exec-${pool}`, t2 - t0);
          add(t, `destroy-${pool}`, now() - t2);
        });
      row(
        "create (warm, pooled restore)",
        shape,
        "create-pooled",
        "ms",
        parts(["own-pooled", "own `spawn_ms`"], ["wire-pooled", "wire"]),
      );
      row(
        "create (pooled) → first exec",
        shape,
        "create-exec-pooled",
        "ms",
        parts(["exec1-pooled", "first exec"]),
      );
      row(
        "create (warm snapshot restored on demand)",
        shape,
        "create-restore",
        "ms",
        parts(["own-restore", "own `spawn_ms`"], ["wire-restore", "wire"]),
      );
      row(
        "create (on demand) → first exec",
        shape,
        "create-exec-restore",
        "ms",
        parts(["exec1-restore", "first exec"]),
      );
      row("destroy", shape, "destroy-pooled", "ms", "after the pooled creates");

      log(`${shape}: pause / resume`);
      const vm = new Map();
      for (const t of sides) {
        vm.set(t, spec(image, mem));
        await t.d.create(vm.get(t));
      }
      await each(reps, async (t) => {
        const s = vm.get(t);
        await sh(t.d, s.sandbox_id, DIRTY);
        const t0 = now();
        const snap = await t.d.pause(s.sandbox_id);
        const t1 = now();
        const rt = await t.d.resume(snap, s);
        const t2 = now();
        await firstExec(t.d, s.sandbox_id);
        add(t, "pause", t1 - t0);
        add(t, "pause-own", snap.pause_ms);
        add(t, "pause-wire", t1 - t0 - snap.pause_ms);
        add(t, "resume", now() - t1);
        add(t, "resume-own", rt.spawn_ms);
        add(t, "resume-wire", t2 - t1 - rt.spawn_ms);
        add(t, "resume-exec1", now() - t2);
      });
      row(
        "pause (128 MiB dirty)",
        shape,
        "pause",
        "ms",
        parts(["pause-own", "own `pause_ms`"], ["pause-wire", "rest"]),
      );
      row(
        "resume → first exec",
        shape,
        "resume",
        "ms",
        parts(["resume-own", "own `spawn_ms`"], ["resume-wire", "wire"], ["resume-exec1", "first exec"]),
      );

      log(`${shape}: fork`);
      const parents = new Map();
      for (const t of sides) parents.set(t, await t.d.pause(vm.get(t).sandbox_id));
      await each(reps, async (t) => {
        const c = spec(image, mem);
        const t0 = now();
        await t.d.fork(parents.get(t), c);
        await firstExec(t.d, c.sandbox_id);
        add(t, "fork", now() - t0);
        await t.d.destroy(c.sandbox_id);
      });
      row("fork → first exec", shape, "fork");
      for (const t of sides) await t.d.resume(parents.get(t), vm.get(t));

      log(`${shape}: exec`);
      await each(Math.max(4 * reps, 40), async (t) => {
        const t0 = now();
        const r = await t.d.exec(vm.get(t).sandbox_id, { argv: ["true"] });
        const t1 = now();
        add(t, "exec", t1 - t0);
        add(t, "exec-own", r.exec_ms);
        add(t, "exec-wire", t1 - t0 - r.exec_ms);
      });
      row(
        "exec `true` round trip",
        shape,
        "exec",
        "ms",
        parts(["exec-own", "own `exec_ms`"], ["exec-wire", "wire"]),
      );

      log(`${shape}: files`);
      const body = fileBody(fileMib);
      await each(Math.min(reps, 5), async (t) => {
        const id = vm.get(t).sandbox_id;
        const t0 = now();
        await t.d.writeFile(id, "/root/xfer.bin", Readable.from([body]));
        const t1 = now();
        const r = await t.d.readFile(id, "/root/xfer.bin");
        await drain(r.body, body.length);
        add(t, "up", fileMib / ((t1 - t0) / 1000));
        add(t, "down", fileMib / ((now() - t1) / 1000));
      });
      row(`upload ${fileMib} MiB`, shape, "up", "MB/s");
      row(`download ${fileMib} MiB`, shape, "down", "MB/s");
      for (const t of sides) await t.d.destroy(vm.get(t).sandbox_id);
    }

    const info = await local.d.info();
    const cpu = cpus()[0]?.model ?? "?";
    console.log(
      `\n### Engine benchmark, in-process vs remote — ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
    );
    console.log(
      `Host: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, accel **${info.accel}**, image \`${image}\`, reps ${reps} per side, interleaved; 1-min load average ${load0.toFixed(1)} at start, ${loadavg()[0].toFixed(1)} at end (the 2 cores are shared).\n`,
    );
    console.log(
      "| what | shape | in-process p50 | p95 | remote p50 | p95 | n | unit | remote ÷ in-process (p50s) | median of per-rep ratios | Δ p50 ms | notes |",
    );
    console.log("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (const r of rows) console.log(r);
    if (json) {
      const { writeFileSync } = await import("node:fs");
      writeFileSync(
        json,
        JSON.stringify({ date: new Date().toISOString(), accel: info.accel, results }, null, 2),
      );
    }
  } finally {
    await remote?.close().catch((e) => log("remote close:", e.message));
    await local.close();
  }
}
