/**
 * A resume that fails before its guest runs leaves the snapshot as it was: resumable, listed, its RAM
 * whole. The resume pipeline is real (bring-up, the RAM copy with `cp`, a small tmpfs that fills up); the
 * host around it is the part a resume that fails at place or files uses (the namespace pool is a fake).
 *   node --test packages/hostd/dist/snapshot/resume.test.js
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { HostdError, type SnapshotRef } from "@createos-sandbox/protocol";
import type { Host } from "../host.js";
import { Layout, type SnapMeta, readSnapMeta, writeSnapMeta } from "../records.js";
import { Mutex, SingleFlight } from "../sys/fs.js";
import { spec, tempDataDir } from "../testutil.js";
import { resume } from "./resume.js";

const dataDir = tempDataDir("resume");
// A filesystem too small for the snapshot's RAM and a copy of it (a full disk, for real).
const small = join(dataDir, "small");

before(async () => {
  await mkdir(small);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", small]);
});
after(async () => {
  execFileSync("umount", [small]);
  await rm(dataDir, { recursive: true, force: true });
});

function fakeHost(root: string, over: Record<string, unknown> = {}) {
  const layout = new Layout(root, join(dataDir, "cache"));
  const errors: string[] = [];
  const host = {
    layout,
    vms: new Map(),
    starting: new Set(),
    ops: new SingleFlight(),
    layerLock: new Mutex(),
    store: { kind: "plain", reflink: false },
    log: { error: (m: string) => errors.push(m), warn() {}, info() {} },
    checkCapacity() {},
    async checkDiskReserve() {},
    async withReservedId<T>(_id: string, fn: () => Promise<T>) {
      return fn();
    },
    withSnapLock<T>(_id: string, fn: () => Promise<T>) {
      return fn();
    },
    netPool: {
      async acquire() {
        return { slot: 7, sandboxIp: "10.201.0.7", netns: "csb-test-7" };
      },
      async letGo() {},
    },
    async cleanupVmFiles(_rec: unknown, dir: string) {
      await rm(dir, { recursive: true, force: true });
    },
    ...over,
  };
  return { layout, host: host as unknown as Host, errors };
}

async function makeSnapshot(layout: Layout, ramBytes: number, extra: Partial<SnapMeta> = {}) {
  for (const d of [layout.vms, layout.snaps, layout.layers, layout.ramLayers])
    await mkdir(d, { recursive: true });
  const sdir = layout.snapDir("S1");
  await mkdir(sdir);
  // Every page written: a sparse copy must copy it all.
  const ram = Buffer.alloc(ramBytes);
  for (let i = 0; i < ram.length; i += 4096) ram[i] = 0xab;
  await writeFile(join(sdir, "ram"), ram);
  await writeFile(join(sdir, "state"), "state");
  await writeFile(join(sdir, "disk.qcow2"), "disk");
  const meta: SnapMeta = {
    image: "i",
    image_hash: "h",
    vcpu: 1,
    mem_mib: 4,
    kernel: "k",
    cmdline: "",
    accel: "tcg",
    tb_size_mib: 32,
    chain: [],
    snapshot_id: "S1",
    sandbox_id: "sb1",
    hostname: "h",
    disk_mib: 64,
    pause_ms: 1,
    created_at: new Date().toISOString(),
    state: "complete",
    ...extra,
  };
  await writeSnapMeta(sdir, meta);
  const ref: SnapshotRef = {
    snapshot_id: "S1",
    sandbox_id: "sb1",
    mem_mib: 4,
    vcpu: 1,
    disk_mib: 64,
    image: "i",
    size_bytes: 0,
    pause_ms: 1,
  };
  return { sdir, ref };
}

const sha = async (p: string) =>
  createHash("sha256")
    .update(await readFile(p))
    .digest("hex");

test("a resume that fails before it moved anything leaves the snapshot complete, and a retry runs again", async () => {
  let acquires = 0;
  const { layout, host } = fakeHost(join(dataDir, "a"), {
    netPool: {
      async acquire() {
        acquires++;
        throw new Error("no free network slot (fake pool)");
      },
      async letGo() {},
    },
  });
  const { sdir, ref } = await makeSnapshot(layout, 64 * 1024);
  const s = spec({ sandbox_id: "sb1", mem_mib: 128, disk_mib: 64 });
  await assert.rejects(resume(host, ref, s), /no free network slot/);
  assert.equal((await readSnapMeta(sdir))?.state, "complete", "not left `resuming`");
  // The retry gets as far as the first one: the snapshot is still there to resume.
  await assert.rejects(resume(host, ref, s), /no free network slot/);
  assert.equal(acquires, 2);
  assert.deepEqual((await readdir(sdir)).sort(), ["disk.qcow2", "meta.json", "ram", "state"]);
});

test("a RAM copy cut short by a full disk leaves the snapshot's RAM whole", async () => {
  const { layout, host } = fakeHost(join(small, "hostd-data"));
  const ramLayer = join(layout.ramLayers, "x.ram");
  const { sdir, ref } = await makeSnapshot(layout, 4 * 1024 * 1024, { ram_layer: ramLayer });
  const before = await sha(join(sdir, "ram"));
  const s = spec({ sandbox_id: "sb1", mem_mib: 128, disk_mib: 64 });
  await assert.rejects(resume(host, ref, s), /No space left on device|ENOSPC/);
  const meta = await readSnapMeta(sdir);
  assert.equal(meta?.state, "complete");
  assert.equal(meta?.ram_layer, ramLayer, "the RAM is still the layer's");
  assert.equal((await stat(join(sdir, "ram"))).size, 4 * 1024 * 1024);
  assert.equal(await sha(join(sdir, "ram")), before, "the snapshot's RAM is the one it had");
  assert.equal(await readFile(join(sdir, "disk.qcow2"), "utf8"), "disk", "its disk came back");
  assert.deepEqual(await readdir(layout.vms), [], "nothing of the VM is left");
});

test("a resume that would copy the RAM checks the disk reserve first", async () => {
  const { layout, host } = fakeHost(join(dataDir, "c"), {
    async checkDiskReserve(action: string) {
      throw new HostdError("capacity", `not enough free disk to ${action}`);
    },
  });
  const { sdir, ref } = await makeSnapshot(layout, 64 * 1024, { ram_layer: join(layout.ramLayers, "x.ram") });
  await assert.rejects(resume(host, ref, spec({ sandbox_id: "sb1", mem_mib: 128, disk_mib: 64 })), (e) => {
    assert.ok(e instanceof HostdError);
    assert.equal(e.code, "capacity");
    assert.match(e.message, /resume a sandbox/);
    return true;
  });
  assert.equal((await readSnapMeta(sdir))?.state, "complete");
  assert.deepEqual(await readdir(layout.vms), []);
});
