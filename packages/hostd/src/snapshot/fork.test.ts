/**
 * A fork's child takes its parent's frozen layer over while layer gc runs: gc has read vms/ (the child's
 * record did not name the layer yet), and the parent snapshot is deleted before gc reads snapshots/. The
 * daemon is real (namespace pool, cgroups, records); the VMM driver is a fake whose restore waits until
 * the test lets it fail, so the child sits mid-start on the layer.
 *   node --test packages/hostd/dist/snapshot/fork.test.js
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { SnapshotRef } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "../daemon.js";
import type { Host } from "../host.js";
import type { SnapMeta } from "../records.js";
import { qemuImg } from "../sys/index.js";
import { spec, tempDataDir } from "../testutil.js";
import type { Machine, MachineConfig, MachineState, VmmDriver } from "../vmm/driver.js";
import { gcHooks, gcLayers } from "./layers.js";

/** Machines whose restore waits for `release()` and then fails. */
class WaitingDriver implements VmmDriver {
  readonly name = "waiting";
  private open: () => void = () => {};
  private readonly gate = new Promise<void>((resolve) => {
    this.open = resolve;
  });
  restoring = 0;

  release(): void {
    this.open();
  }

  async probeAccel(): Promise<"tcg"> {
    return "tcg";
  }

  configure(config: MachineConfig): Machine {
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
        this.restoring++;
        await this.gate;
        throw new Error("restore failed (fake driver)");
      },
      resume: no,
      pause: no,
      snapshot: no,
      stop: async () => {
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

const dataDir = tempDataDir("forkgc");
const driver = new WaitingDriver();
const snapsDir = join(dataDir, "hostd", "snapshots");
let d: LocalHostDaemon;

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
  gcHooks.between = undefined;
  driver.release();
  await d?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function parentSnapshot(id: string): Promise<SnapshotRef> {
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

const until = (cond: () => boolean) =>
  new Promise<void>((resolve) => {
    const poll = () => (cond() ? resolve() : setImmediate(poll));
    poll();
  });

test("a fork's child record takes over the parent's layer while gc runs, and the layer stays", async () => {
  const host = (d as unknown as { host: Host }).host;
  const parent = await parentSnapshot("snap-forkgc-parent");
  // Freeze the parent first: the fork below only hands the layer on.
  const paused = await d.fork(parent, spec({ sandbox_id: "forkgc-paused", mem_mib: 128, disk_mib: 64 }), {
    start_paused: true,
  });
  const meta = JSON.parse(readFileSync(join(snapsDir, parent.snapshot_id, "meta.json"), "utf8")) as SnapMeta;
  const layer = meta.chain[0]!;
  assert.ok(existsSync(layer));
  // The start_paused child names the layer too: out of the way, so only the running child's record does.
  await d.deleteSnapshot(paused.snapshot!);

  const childRec = join(dataDir, "hostd", "vms", "forkgc-child", "vm.json");
  const named = () => existsSync(childRec) && readFileSync(childRec, "utf8").includes(layer);
  let forked: Promise<unknown> | undefined;
  let deleted: Promise<unknown> | undefined;
  let settled = false;
  gcHooks.between = async (pass) => {
    if (pass !== "vms" || forked) return;
    forked = d
      .fork(parent, spec({ sandbox_id: "forkgc-child", mem_mib: 128, disk_mib: 64 }))
      .catch((e) => e)
      .finally(() => {
        settled = true;
      });
    // The child got as far as its restore (its record written), or that write waits for this gc to end.
    await until(() => driver.restoring > 0 || host.layerLock.pending > 1 || settled);
    // If it got that far, the parent goes now, before gc reads snapshots/.
    if (driver.restoring > 0) {
      deleted = d.deleteSnapshot(parent);
      // Its dir is gone, also from the name it is moved aside to first (which gc would still read).
      await until(() => !readdirSync(snapsDir).some((n) => n.includes(parent.snapshot_id)));
    }
  };
  await gcLayers(host);
  gcHooks.between = undefined;
  await until(() => driver.restoring > 0 || settled);
  assert.equal(settled, false, "the child is still starting");
  assert.ok(named(), "the child, restoring, names the layer");
  assert.ok(existsSync(layer), "the layer under the restoring child is still there");
  deleted ??= d.deleteSnapshot(parent);
  await deleted;
  await gcLayers(host);
  assert.ok(existsSync(layer), "the child's record keeps it once the parent is gone");
  driver.release();
  assert.match(String(await forked), /restore failed \(fake driver\)/);
});
