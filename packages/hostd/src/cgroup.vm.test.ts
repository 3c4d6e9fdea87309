/**
 * A cgroup per VM, on real VMs: every QEMU (create, resume, fork, re-adopted) runs in its own cgroup with
 * its shape's limits, an abusive guest (memory hog, fork bomb) is held by its own cgroup while a second
 * sandbox stays responsive, and no cgroup of ours outlives its VM.
 *
 *   npx tsc -b packages/hostd && flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/cgroup.vm.test.js
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { VmSpec } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import type { VmRecord } from "./records.js";
import { CGROUP_ROOT, Cgroups, PIDS_MAX, vmLimits } from "./sys/cgroup.js";
import { TEST_IMAGE, openOpts, run, sleep, spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("cgroup");
const cg = Cgroups.detect(CGROUP_ROOT, Cgroups.parentFor(join(dataDir, "hostd")));
const MIB = 1024 * 1024;
/** Bound on the second sandbox's exec latency while the first one misbehaves, × its quiet median. */
const LATENCY_FACTOR = 4;
let d: LocalHostDaemon;

before(async () => {
  assert.ok(cg.available, "this host has no usable cgroups (doctor says why)");
  // No warm pool: its refills would run on the cores the latency measurement shares.
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), warmPool: 0 });
  await d.ensureImage(TEST_IMAGE);
});

after(async () => {
  for (const v of await d.list()) await d.destroy(v.sandbox_id);
  await d.close();
  assert.deepEqual(await cg.names(), [], "no VM cgroup of ours is left");
  for (const dir of cg.dirs("")) assert.throws(() => readdirSync(dir), /ENOENT/, `${dir} removed`);
  rmSync(dataDir, { recursive: true, force: true });
});

const record = (id: string): VmRecord =>
  JSON.parse(readFileSync(join(dataDir, "hostd", "vms", id, "vm.json"), "utf8")) as VmRecord;
const num = (path: string) => Number(readFileSync(path, "utf8").trim().split(/\s+/)[0]);

/** The cgroup path of `pid` in each hierarchy we use, from /proc/<pid>/cgroup (or a thread's). */
function cgroupPaths(procFile: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(procFile, "utf8").trim().split("\n")) {
    const [, ctrls = "", path = ""] = line.split(":");
    if (cg.mode === "v2" && ctrls === "") out.set("unified", path);
    for (const c of ctrls.split(",")) if (cg.controllers.includes(c)) out.set(c, path);
  }
  return out;
}

/** Checks that the sandbox's QEMU, every thread of it, sits in its own cgroup holding `s`'s limits. */
function assertOwnCgroup(s: VmSpec): { pid: number; name: string; dir: (c: string) => string } {
  const pid = d.pidOf(s.sandbox_id);
  assert.ok(pid, `${s.sandbox_id} runs`);
  const rec = record(s.sandbox_id);
  const name = rec.cgroup ?? "";
  assert.ok(name.startsWith(`${s.sandbox_id}.`), `cgroup named per launch: ${name}`);
  const want = `/${cg.parent}/${name}`;
  const mine = cgroupPaths(`/proc/${pid}/cgroup`);
  for (const c of cg.mode === "v2" ? ["unified"] : cg.controllers) assert.equal(mine.get(c), want, c);
  for (const t of readdirSync(`/proc/${pid}/task`))
    assert.deepEqual(cgroupPaths(`/proc/${pid}/task/${t}/cgroup`), mine, `thread ${t}`);
  const lim = vmLimits({ ...rec, cpu_quota_pct: s.cpu_quota_pct });
  assert.equal(lim.memBytes, (s.mem_mib + 192 + rec.tb_size_mib) * MIB);
  const dir = (c: string) => (cg.mode === "v1" ? join(CGROUP_ROOT, c, want) : join(CGROUP_ROOT, want));
  if (cg.mode === "v1") {
    assert.equal(num(join(dir("cpu"), "cpu.cfs_quota_us")), (s.cpu_quota_pct ?? s.vcpu * 100) * 1000);
    assert.equal(num(join(dir("cpu"), "cpu.cfs_period_us")), 100_000);
    assert.equal(num(join(dir("memory"), "memory.limit_in_bytes")), lim.memBytes);
    assert.equal(num(join(dir("pids"), "pids.max")), PIDS_MAX);
  } else {
    assert.equal(readFileSync(join(dir(""), "cpu.max"), "utf8").trim(), `${lim.cpuQuotaPct * 1000} 100000`);
    assert.equal(num(join(dir(""), "memory.max")), lim.memBytes);
    assert.equal(num(join(dir(""), "pids.max")), PIDS_MAX);
  }
  return { pid, name, dir };
}

const memFile = (f1: string, f2: string) => (cg.mode === "v1" ? f1 : f2);
/** User + system CPU time of a process so far, seconds. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(f[11]) + Number(f[12])) / 100;
}
const rssMib = (pid: number) =>
  Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024);

async function medianExecMs(id: string, n = 10): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    assert.equal((await d.exec(id, { argv: ["true"] })).exit_code, 0);
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return Math.round(((ms[(n - 1) >> 1] as number) + (ms[n >> 1] as number)) / 2);
}

/** A quarter of a core: a busy guest surely meets its quota even when the host's other load slows it. */
const QUOTA = 25;
const abuser = spec({ cpu_quota_pct: QUOTA });
const victim = spec();

test("every QEMU runs in a cgroup of its own with its shape's limits: create, fork, resume", async () => {
  await d.create(abuser);
  await d.create(victim);
  const a = assertOwnCgroup(abuser);
  const v = assertOwnCgroup(victim);
  assert.notEqual(a.name, v.name);
  const usage = num(join(a.dir("memory"), memFile("memory.usage_in_bytes", "memory.current")));
  console.log(`QEMU RSS ${rssMib(a.pid)} MiB, cgroup usage ${Math.round(usage / MIB)} MiB (256 MiB guest)`);

  const snap = await d.pause(abuser.sandbox_id);
  const child = spec({ cpu_quota_pct: 50 });
  await d.fork(snap, child);
  const c = assertOwnCgroup(child);
  await d.resume(snap, abuser);
  const a2 = assertOwnCgroup(abuser);
  assert.notEqual(a2.name, a.name, "a resumed QEMU gets a new cgroup");
  for (let i = 0; i < 100 && (await cg.names()).includes(a.name); i++) await sleep(50);
  assert.ok(!(await cg.names()).includes(a.name), "the paused QEMU's cgroup is gone");
  await d.destroy(child.sandbox_id);
  assert.ok(!(await cg.names()).includes(c.name), "destroy removes the cgroup");
  await d.deleteSnapshot(snap);
});

test("re-adoption finds each QEMU in its cgroup; cgroups of VMs gone are swept", async () => {
  const before = assertOwnCgroup(victim).name;
  await d.close();
  for (const dir of cg.dirs("stale.deadbeef")) mkdirSync(dir, { recursive: true });
  d = await LocalHostDaemon.open({ ...openOpts(dataDir), warmPool: 0 });
  assert.equal(assertOwnCgroup(victim).name, before);
  assertOwnCgroup(abuser);
  assert.ok(!(await cg.names()).includes("stale.deadbeef"), "leftover swept");
});

test("a memory hog and a fork bomb stay in their cgroup; the other sandbox stays responsive", async () => {
  const a = assertOwnCgroup(abuser);
  await medianExecMs(victim.sandbox_id, 3);
  const quiet = await medianExecMs(victim.sandbox_id);

  // Twice its RAM, touched: the guest's own OOM killer ends it; the host sees at most RAM + overhead.
  const hog = run(d, abuser.sandbox_id, [
    "python3",
    "-c",
    "b=[]\nwhile len(b) < 32:\n    b.append(b'x' * (16 << 20))",
  ]);
  const duringHog = await medianExecMs(victim.sandbox_id);
  const hogged = await hog;
  assert.notEqual(hogged.code, 0, "the hog cannot have 512 MiB in a 256 MiB guest");
  const mem = a.dir("memory");
  const peak = num(join(mem, memFile("memory.max_usage_in_bytes", "memory.peak")));
  const limit = vmLimits({ ...record(abuser.sandbox_id), cpu_quota_pct: QUOTA }).memBytes;
  const stat = readFileSync(join(mem, "memory.stat"), "utf8");
  const statMib = (k: string) => Math.round(Number(new RegExp(`^${k} (\\d+)`, "m").exec(stat)?.[1]) / MIB);
  console.log(
    `abuser after the hog: anon ${statMib(memFile("rss", "anon"))} MiB, file ${statMib(memFile("cache", "file"))} MiB`,
  );
  assert.ok(peak > 128 * MIB, `the guest's pages are charged to its own cgroup (${peak >> 20} MiB)`);
  assert.ok(peak <= limit, `peak ${peak >> 20} MiB within the limit ${limit >> 20} MiB`);

  // A fork bomb with no ulimit, for 10 s; the VM is destroyed after (that is what ends it for sure).
  const statOf = () =>
    Object.fromEntries(
      readFileSync(join(a.dir("cpu"), "cpu.stat"), "utf8")
        .trim()
        .split("\n")
        .map((l) => l.split(" ") as [string, string]),
    );
  const t0 = Number(statOf().nr_throttled);
  const cpu0 = cpuSeconds(a.pid);
  const wall0 = Date.now();
  await run(d, abuser.sandbox_id, ["sh", "-c", "nohup bash -c ':(){ :|:& };:' >/dev/null 2>&1 &"]);
  const bombed: number[] = [];
  const end = Date.now() + 10_000;
  while (Date.now() < end) bombed.push(await medianExecMs(victim.sandbox_id, 3));
  bombed.sort((x, y) => x - y);
  const duringBomb = bombed[bombed.length >> 1] as number;
  const throttled = Number(statOf().nr_throttled) - t0;
  const cpuPct = Math.round(((cpuSeconds(a.pid) - cpu0) * 100_000) / (Date.now() - wall0));
  const pidsPeak = cg.mode === "v1" ? readFileSync(join(a.dir("pids"), "pids.current"), "utf8").trim() : "-";
  console.log(
    `victim exec median: quiet ${quiet} ms, during hog ${duringHog} ms, during fork bomb ${duringBomb} ms; ` +
      `abuser: peak memory ${peak >> 20}/${limit >> 20} MiB, hog exit ${hogged.code}, ` +
      `CPU ${cpuPct} % of a core and throttled ${throttled} periods during the bomb, QEMU tasks ${pidsPeak}`,
  );
  assert.ok(throttled > 0, `the abuser's CPU quota (${QUOTA} %) held it back`);
  await d.destroy(abuser.sandbox_id);
  assert.ok(!(await cg.names()).includes(a.name));
  const bound = LATENCY_FACTOR * quiet;
  assert.ok(duringHog <= bound, `during the hog: ${duringHog} ms vs quiet ${quiet} ms`);
  assert.ok(duringBomb <= bound, `during the fork bomb: ${duringBomb} ms vs quiet ${quiet} ms`);
  assert.equal((await run(d, victim.sandbox_id, ["echo", "alive"])).stdout, "alive\n");
});
