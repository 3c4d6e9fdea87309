/**
 * A failed start undoes exactly what it did: the bring-up pipeline's undo stack, driven through the daemon
 * with a VMM driver whose restore fails (no VM runs; the namespace pool and files are real).
 *   node --test packages/hostd/dist/bringup.test.js
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { SnapshotRef } from "@createos-sandbox/protocol";
import { Undo } from "./bringup.js";
import { LocalHostDaemon } from "./daemon.js";
import type { SnapMeta } from "./records.js";
import { CGROUP_ROOT, Cgroups } from "./sys/cgroup.js";
import { qemuImg } from "./sys/index.js";
import { spec, tempDataDir } from "./testutil.js";
import type { Machine, MachineConfig, MachineState, VmmDriver } from "./vmm/driver.js";

/** A driver whose machines fail to restore; it records what was configured and stopped. */
class FailingDriver implements VmmDriver {
  readonly name = "failing";
  readonly configured: MachineConfig[] = [];
  /** Whether the VM's cgroup existed when its machine was configured (the pipeline makes it first). */
  readonly cgroupAtConfigure: boolean[] = [];
  stopped = 0;

  async probeAccel(): Promise<"tcg"> {
    return "tcg";
  }

  configure(config: MachineConfig): Machine {
    this.configured.push(config);
    const base = cgroups.dirs("")[0];
    this.cgroupAtConfigure.push(
      base !== undefined &&
        existsSync(base) &&
        readdirSync(base, { withFileTypes: true }).some((e) => e.isDirectory()),
    );
    let state: MachineState = "configured";
    const no = async () => {
      throw new Error("fake machine: not supported");
    };
    return {
      config,
      paths: { qmp: "", agent: "", console: "", pidfile: "" },
      get state() {
        return state;
      },
      pid: undefined,
      start: no,
      restore: async () => {
        throw new Error("restore failed (fake driver)");
      },
      resume: no,
      pause: no,
      snapshot: no,
      stop: async () => {
        this.stopped++;
        state = "stopped";
      },
      resizeDisk: no,
      detach() {},
      exited: new Promise<string>(() => {}),
    };
  }

  async adopt(): Promise<undefined> {
    return undefined;
  }
}

const dataDir = tempDataDir("bringup");
const cgroups = Cgroups.detect(CGROUP_ROOT, Cgroups.parentFor(join(dataDir, "hostd")));
const driver = new FailingDriver();
let d: LocalHostDaemon;
const snapsDir = join(dataDir, "hostd", "snapshots");
const vmsDir = join(dataDir, "hostd", "vms");

before(async () => {
  d = await LocalHostDaemon.open({
    dataDir,
    cacheDir: join(dataDir, "cache"),
    driver,
    warmPool: 0,
    netPool: 0,
  });
});

after(async () => {
  await d?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A snapshot dir as a pause leaves it (the RAM and state are placeholders: the driver never reads them). */
async function fakeSnapshot(id: string): Promise<SnapshotRef> {
  const sdir = join(snapsDir, id);
  mkdirSync(sdir, { recursive: true });
  writeFileSync(join(sdir, "ram"), "ram");
  writeFileSync(join(sdir, "state"), "state");
  await qemuImg(["create", "-q", "-f", "qcow2", join(sdir, "disk.qcow2"), "64M"]);
  const meta: SnapMeta = {
    snapshot_id: id,
    sandbox_id: "parent",
    hostname: "parent",
    image: "debian:12",
    image_hash: "h",
    vcpu: 1,
    mem_mib: 128,
    disk_mib: 64,
    kernel: "/nonexistent/vmlinux",
    cmdline: "",
    accel: "tcg",
    tb_size_mib: 32,
    chain: [],
    pause_ms: 1,
    created_at: new Date().toISOString(),
  };
  writeFileSync(join(sdir, "meta.json"), JSON.stringify(meta));
  return {
    snapshot_id: id,
    sandbox_id: "parent",
    mem_mib: 128,
    vcpu: 1,
    disk_mib: 64,
    image: "debian:12",
    size_bytes: 0,
    pause_ms: 1,
  };
}

test("undo steps run last-first, and one failing does not stop the rest", async () => {
  const order: number[] = [];
  const u = new Undo();
  u.push(async () => order.push(1));
  u.push(async () => {
    order.push(2);
    throw new Error("boom");
  });
  u.push(async () => order.push(3));
  await u.run();
  assert.deepEqual(order, [3, 2, 1]);
  await u.run();
  assert.deepEqual(order, [3, 2, 1], "a stack runs once");
});

test("a resume whose restore fails gives the snapshot its files back and frees the slot", async () => {
  const ref = await fakeSnapshot("snap-undo-resume");
  const s = spec({ sandbox_id: "undo-resume", mem_mib: 128, disk_mib: 64 });
  const stops = driver.stopped;
  await assert.rejects(d.resume(ref, s), /restore failed \(fake driver\)/);
  const cfg = driver.configured.at(-1);
  assert.ok(cfg?.netns, "the machine was configured in a namespace");
  assert.equal(driver.stopped, stops + 1, "the configured machine was stopped");
  assert.ok(!existsSync(`/run/netns/${cfg.netns}`), `namespace ${cfg.netns} removed`);
  assert.deepEqual(readdirSync(vmsDir), []);
  assert.equal(driver.cgroupAtConfigure.at(-1), cgroups.available, "the VM's cgroup was made before QEMU");
  assert.deepEqual(await cgroups.names(), [], "and removed by the undo");
  assert.deepEqual(readdirSync(join(snapsDir, ref.snapshot_id)).sort(), [
    "disk.qcow2",
    "meta.json",
    "ram",
    "state",
  ]);
  assert.deepEqual(await d.list(), []);
  // Nothing of the failed attempt is left to block the next one.
  await assert.rejects(d.resume(ref, s), /restore failed \(fake driver\)/);
});

test("a fork whose restore fails leaves no child behind and the parent forkable", async () => {
  const ref = await fakeSnapshot("snap-undo-fork");
  const stops = driver.stopped;
  await assert.rejects(
    d.fork(ref, spec({ sandbox_id: "undo-fork", mem_mib: 128, disk_mib: 64 })),
    /restore failed \(fake driver\)/,
  );
  const cfg = driver.configured.at(-1);
  assert.equal(driver.stopped, stops + 1);
  assert.ok(cfg?.netns && !existsSync(`/run/netns/${cfg.netns}`), "namespace removed");
  assert.deepEqual(readdirSync(vmsDir), []);
  assert.ok(existsSync(join(snapsDir, ref.snapshot_id, "meta.json")));
  // The parent's frozen layer stays: the parent backs onto it.
  assert.equal(readdirSync(join(dataDir, "hostd", "layers")).length, 1);
  const paused = await d.fork(ref, spec({ sandbox_id: "undo-fork-2", mem_mib: 128, disk_mib: 64 }), {
    start_paused: true,
  });
  assert.ok(paused.snapshot, "a start_paused fork of the same parent still works");
});
