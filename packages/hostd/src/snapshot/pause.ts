/**
 * Pause: agent quiesce → vCPUs stopped → device state saved (RAM fsync meanwhile) → QEMU quits → the RAM
 * file and top disk layer are renamed into the snapshot dir. What is left (QEMU's exit, its cgroup, the
 * namespace, the old VM dir) finishes in the background once the snapshot is durable.
 */
import { randomUUID } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef } from "@createos-sandbox/protocol";
import { TIMEOUTS, now, stopwatch } from "../bringup.js";
import { type Host, type Vm, cgroupName } from "../host.js";
import { type SnapMeta, TRASH_PREFIX, baseOf, fsyncFile, snapRef, writeSnapMeta } from "../records.js";

export async function pause(host: Host, sandboxId: string): Promise<SnapshotRef> {
  const vm = host.getVm(sandboxId);
  return host.withVmLock(vm, async () => {
    if (vm.gone) throw new HostdError("not_found", `sandbox ${sandboxId} is not running on this host`);
    await host.checkDiskReserve("pause a sandbox");
    const t0 = now();
    const snapId = `snap-${randomUUID()}`;
    const sdir = host.layout.snapDir(snapId);
    await mkdir(sdir, { recursive: true });
    const sw = stopwatch();
    await saveState(vm, sdir, sw);
    vm.gone = true;
    host.vms.delete(sandboxId);
    vm.agent.close();
    // After the state transfer QEMU writes nothing more (its disk is inactive, RAM is a mapping of the
    // file just flushed), so the files can move while it exits.
    const exited = vm.machine.stop(TIMEOUTS.stopMs);
    await rename(join(vm.dir, "ram"), join(sdir, "ram"));
    await rename(join(vm.dir, "disk.qcow2"), join(sdir, "disk.qcow2"));
    const pause_ms = Math.round(now() - t0);
    const meta: SnapMeta = {
      ...baseOf(vm.rec),
      snapshot_id: snapId,
      sandbox_id: sandboxId,
      hostname: vm.rec.hostname,
      disk_mib: vm.rec.disk_mib,
      pause_ms,
      created_at: new Date().toISOString(),
    };
    await writeSnapMeta(sdir, meta);
    const ref = await snapRef(host.layout, meta);
    // The snapshot is durable; the dir is moved aside first so the same sandbox can be resumed at once;
    // the slot stays reserved until its namespace is gone.
    const trash = join(host.layout.vms, `${TRASH_PREFIX}${randomUUID().slice(0, 12)}`);
    await rename(vm.dir, trash);
    if (vm.rec.launch_dir && vm.rec.launch_dir !== vm.dir) await rm(vm.rec.launch_dir, { force: true });
    sw.lap("move");
    const cgroup = cgroupName(vm.rec, vm.dir);
    host.background(async () => {
      await exited;
      await host.removeCgroup(cgroup);
      await host.releaseSlot(vm.rec.slot);
      await rm(trash, { recursive: true, force: true });
    });
    host.log.info("VM paused", { sandbox_id: sandboxId, snapshot_id: snapId, pause_ms, ...sw.laps });
    return ref;
  });
}

/** Stops the guest and writes its device state to `sdir`, with RAM and disk flushed; undone on failure. */
async function saveState(vm: Vm, sdir: string, sw: ReturnType<typeof stopwatch>): Promise<void> {
  const ram = join(vm.dir, "ram");
  try {
    // Most of a pause is flushing the RAM file's dirty pages: start while the agent quiesces (what the
    // guest dirties meanwhile is caught by the second flush, after the vCPUs stopped).
    const early = fsyncFile(ram).catch(() => undefined);
    await vm.agent.quiesce();
    sw.lap("quiesce");
    await vm.machine.pause();
    // RAM no longer changes once the vCPUs stop: flush it while QEMU writes the device state.
    const ramSync = early.then(() => fsyncFile(ram));
    await vm.machine.snapshot(join(sdir, "state"));
    sw.lap("state");
    await Promise.all([ramSync, fsyncFile(join(sdir, "state")), fsyncFile(join(vm.dir, "disk.qcow2"))]);
    sw.lap("fsync");
  } catch (e) {
    await rm(sdir, { recursive: true, force: true });
    if (vm.machine.state === "paused") {
      await vm.machine.resume().catch(() => undefined);
      await vm.agent.hello().catch(() => undefined);
    }
    throw e;
  }
}
