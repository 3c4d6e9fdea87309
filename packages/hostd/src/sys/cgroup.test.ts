/**
 * The cgroup module against fake cgroup roots (plain directories): detection, the limit files each
 * layout gets, membership, removal and its errors. The real kernel side is cgroup.vm.test.ts.
 *   node --test packages/hostd/dist/sys/cgroup.test.js
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type CgroupLimits, Cgroups, vmLimits } from "./cgroup.js";

const tmp = mkdtempSync(join(tmpdir(), "csb-cgroup-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const MIB = 1024 * 1024;
const PARENT = "createos-sandbox/abcd1234";
const LIMITS: CgroupLimits = vmLimits({ vcpu: 1, mem_mib: 256, tb_size_mib: 32, cpu_quota_pct: 50 });

function fakeRoot(name: string, layout: { v1?: string[]; v2?: string }): string {
  const root = join(tmp, name);
  mkdirSync(root, { recursive: true });
  for (const c of layout.v1 ?? []) {
    mkdirSync(join(root, c), { recursive: true });
    writeFileSync(join(root, c, "cgroup.procs"), "");
  }
  if (layout.v2 !== undefined) writeFileSync(join(root, "cgroup.controllers"), layout.v2);
  return root;
}

const read = (p: string) => readFileSync(p, "utf8");

test("limits: one core per vCPU unless the shape names a quota; RAM + VMM overhead + TCG cache", () => {
  assert.deepEqual(vmLimits({ vcpu: 2, mem_mib: 512, tb_size_mib: 32 }), {
    cpuQuotaPct: 200,
    memBytes: (512 + 192 + 32) * MIB,
    pidsMax: 256,
    ioWeight: 100,
  });
  assert.equal(LIMITS.cpuQuotaPct, 50);
});

test("detection: v2 with its controllers, else v1 controllers, else none (a hybrid host is v1)", () => {
  const v2 = Cgroups.detect(fakeRoot("d-v2", { v2: "cpuset cpu io memory pids\n" }), PARENT);
  assert.equal(v2.mode, "v2");
  assert.deepEqual(v2.controllers, ["cpu", "memory", "pids", "io"]);
  const hybrid = fakeRoot("d-hybrid", { v1: ["cpu", "memory", "pids", "blkio"] });
  mkdirSync(join(hybrid, "unified"));
  writeFileSync(join(hybrid, "unified", "cgroup.controllers"), "hugetlb\n");
  assert.equal(Cgroups.detect(hybrid, PARENT).mode, "v1");
  const emptyV2 = fakeRoot("d-empty-v2", { v2: "hugetlb\n", v1: ["cpu", "memory", "pids"] });
  assert.equal(Cgroups.detect(emptyV2, PARENT).mode, "v1", "a v2 root without the controllers is not used");
  const none = Cgroups.detect(fakeRoot("d-none", { v1: ["cpu", "memory"] }), PARENT);
  assert.equal(none.mode, "none", "v1 without pids is not enough");
  assert.equal(none.available, false);
});

test("no cgroups at all: every call is a no-op, names() is empty", async () => {
  const root = fakeRoot("none", {});
  const cg = Cgroups.detect(root, PARENT);
  await cg.create("vm-a", LIMITS);
  await cg.enter("vm-a", 1234);
  assert.equal(await cg.contains("vm-a", 1234), true);
  await cg.remove("vm-a");
  assert.deepEqual(await cg.names(), []);
  assert.match(String(await cg.probe()), /no usable cgroup/);
  assert.equal(existsSync(join(root, "createos-sandbox")), false);
});

test("v1: a directory per controller with the shape's limits; optional knobs only where they exist", async () => {
  const root = fakeRoot("v1", { v1: ["cpu", "memory", "pids", "blkio"] });
  const cg = Cgroups.detect(root, PARENT);
  // Files the kernel would create in a new memory and blkio cgroup (the fake makes only these two).
  const mem = join(root, "memory", PARENT, "vm-a");
  mkdirSync(mem, { recursive: true });
  writeFileSync(join(mem, "memory.memsw.limit_in_bytes"), "9223372036854771712");
  const blk = join(root, "blkio", PARENT, "vm-a");
  mkdirSync(blk, { recursive: true });
  writeFileSync(join(blk, "blkio.bfq.weight"), "100");
  await cg.create("vm-a", LIMITS);
  const cpu = join(root, "cpu", PARENT, "vm-a");
  assert.equal(read(join(cpu, "cpu.cfs_period_us")), "100000");
  assert.equal(read(join(cpu, "cpu.cfs_quota_us")), "50000", "50 % of one core");
  assert.equal(read(join(mem, "memory.limit_in_bytes")), String(480 * MIB));
  assert.equal(read(join(mem, "memory.memsw.limit_in_bytes")), String(480 * MIB), "no swap on top");
  assert.equal(existsSync(join(mem, "memory.swappiness")), false, "absent knob not invented");
  assert.equal(read(join(root, "pids", PARENT, "vm-a", "pids.max")), "256");
  assert.equal(read(join(blk, "blkio.bfq.weight")), "100");
  assert.deepEqual(cg.dirs("vm-a"), [cpu, mem, join(root, "pids", PARENT, "vm-a"), blk]);
  assert.deepEqual(await cg.names(), ["vm-a"]);
});

test("v1: enter writes the pid to every hierarchy and checks it landed", async () => {
  const root = fakeRoot("v1-enter", { v1: ["cpu", "memory", "pids"] });
  const cg = Cgroups.detect(root, PARENT);
  await cg.create("vm-b", LIMITS);
  assert.equal(await cg.contains("vm-b", 4242), false);
  await cg.enter("vm-b", 4242);
  for (const d of cg.dirs("vm-b")) assert.equal(read(join(d, "cgroup.procs")), "4242");
  assert.equal(await cg.contains("vm-b", 4242), true);
});

test("adopt keeps an existing cgroup's limits and makes a missing one", async () => {
  const root = fakeRoot("v1-adopt", { v1: ["cpu", "memory", "pids"] });
  const cg = Cgroups.detect(root, PARENT);
  await cg.create("vm-c", LIMITS);
  await cg.adopt("vm-c", 77, vmLimits({ vcpu: 1, mem_mib: 256 }));
  assert.equal(
    read(join(root, "cpu", PARENT, "vm-c", "cpu.cfs_quota_us")),
    "50000",
    "the shape's quota stays",
  );
  assert.equal(await cg.contains("vm-c", 77), true);
  await cg.adopt("vm-d", 78, vmLimits({ vcpu: 1, mem_mib: 256 }));
  assert.equal(read(join(root, "cpu", PARENT, "vm-d", "cpu.cfs_quota_us")), "100000");
  assert.equal(await cg.contains("vm-d", 78), true);
});

test("v2: controllers enabled down the path, one directory with cpu.max, memory.max, pids.max, io", async () => {
  const root = fakeRoot("v2", { v2: "cpu io memory pids" });
  const cg = Cgroups.detect(root, PARENT);
  const d = join(root, PARENT, "vm-a");
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, "memory.swap.max"), "max");
  writeFileSync(join(d, "io.weight"), "default 100");
  await cg.create("vm-a", vmLimits({ vcpu: 2, mem_mib: 1024, tb_size_mib: 64 }));
  for (const p of [root, join(root, "createos-sandbox"), join(root, PARENT)])
    assert.equal(read(join(p, "cgroup.subtree_control")), "+cpu +memory +pids +io", p);
  assert.equal(read(join(d, "cpu.max")), "200000 100000");
  assert.equal(read(join(d, "memory.max")), String((1024 + 192 + 64) * MIB));
  assert.equal(read(join(d, "memory.swap.max")), "0");
  assert.equal(read(join(d, "pids.max")), "256");
  assert.equal(read(join(d, "io.weight")), "100");
  assert.deepEqual(cg.dirs("vm-a"), [d]);
});

test("a limit that cannot be written fails the create with the file and errno", async () => {
  const root = fakeRoot("v2-fail", { v2: "cpu memory pids" });
  const cg = Cgroups.detect(root, PARENT);
  mkdirSync(join(root, PARENT, "vm-x", "memory.max"), { recursive: true });
  await assert.rejects(cg.create("vm-x", LIMITS), (e: Error) => {
    assert.match(e.message, /cannot write "503316480" to .*vm-x\/memory\.max: EISDIR/);
    return true;
  });
});

test("remove: idempotent, and a cgroup that cannot go says which one and why", async () => {
  const root = fakeRoot("v1-rm", { v1: ["cpu", "memory", "pids"] });
  const cg = Cgroups.detect(root, PARENT);
  for (const d of cg.dirs("vm-e")) mkdirSync(d, { recursive: true });
  await cg.remove("vm-e");
  for (const d of cg.dirs("vm-e")) assert.equal(existsSync(d), false);
  await cg.remove("vm-e");
  await cg.create("vm-f", LIMITS);
  // A plain directory keeps its files, so rmdir fails as a busy cgroup would.
  await assert.rejects(cg.remove("vm-f"), /cannot remove .*cpu\/createos-sandbox\/abcd1234\/vm-f: ENOTEMPTY/);
});

test("names are checked, and each daemon instance gets its own parent", async () => {
  const cg = Cgroups.detect(fakeRoot("names", { v1: ["cpu", "memory", "pids"] }), PARENT);
  await assert.rejects(cg.create("../escape", LIMITS), /bad cgroup name/);
  await assert.rejects(cg.remove(""), /bad cgroup name/);
  await assert.rejects(cg.create(".", LIMITS), /bad cgroup name/);
  // Warm-pool VMs live in `_pool-…` dirs, and their cgroups are named after them.
  await cg.create("_pool-06650ce5-15a.55afea5a", LIMITS);
  for (const d of cg.dirs("_pool-06650ce5-15a.55afea5a")) assert.equal(existsSync(d), true);
  const a = Cgroups.parentFor("/var/lib/createos-sandbox/hostd");
  assert.equal(a, Cgroups.parentFor("/var/lib/createos-sandbox/hostd/"));
  assert.notEqual(a, Cgroups.parentFor("/srv/other/hostd"));
  assert.match(a, /^createos-sandbox\/[0-9a-f]{8}$/);
});
