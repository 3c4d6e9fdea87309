/**
 * Pause into the snapshot id the control plane chose: agent quiesce → vCPUs stopped → device state saved
 * (RAM fsync meanwhile) → QEMU quits → the RAM file and top disk layer are renamed into the snapshot dir.
 * Each step is made durable before the next, behind meta.json's marker (records.ts `SnapState`): pending
 * while the state is written, saved once it and the RAM and disk are flushed, complete once every file is
 * in the snapshot dir. A repeated pause of the same id joins the one in flight or answers the snapshot it
 * made. What is left (QEMU's exit, its cgroup, the namespace, the old VM dir) finishes in the background.
 */
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef } from "@createos-sandbox/protocol";
import { MIB, TIMEOUTS, now, stopwatch } from "../bringup.js";
import { type Host, type Vm, cgroupName } from "../host.js";
import {
  type SnapMeta,
  TRASH_PREFIX,
  baseOf,
  checkSnapshotId,
  fsyncFile,
  readSnapMeta,
  readVmRecord,
  removeDir,
  snapRef,
  snapState,
  writeSnapMeta,
} from "../records.js";
import { crashPoint } from "../sys/crash.js";
import { fsyncDir } from "../sys/fs.js";
import { openRegular } from "../sys/nofollow.js";
import { gcLayers } from "./layers.js";
import { giveBackAll } from "./recover.js";

/** The files a pause moves from the VM dir into the snapshot dir (re-adoption finishes the move). */
export const SNAP_FILES = ["ram", "disk.qcow2"] as const;

/** Tests only: runs once the files are in the snapshot dir, before it is marked complete. */
export const pauseHooks: { afterMove?: () => void } = {};

export function pause(host: Host, sandboxId: string, snapshotId?: string): Promise<SnapshotRef> {
  const snapId = snapshotId ?? `snap-${randomUUID()}`;
  checkSnapshotId(snapId);
  return host.ops.do(`pause:${snapId}`, () =>
    host.withSnapLock(snapId, async () => {
      const done = await readSnapMeta(host.layout.snapDir(snapId));
      if (done && done.sandbox_id !== sandboxId && snapState(done) !== "pending")
        throw new HostdError("conflict", `snapshot ${snapId} belongs to sandbox ${done.sandbox_id}`);
      if (done && snapState(done) === "complete") return snapRef(host.layout, done);
      // A pause of this id that failed past "saved" (its VM is gone): the retry finishes it.
      if (done && snapState(done) === "saved" && !host.vms.has(sandboxId)) {
        const ref = await finishSaved(host, done);
        if (ref) return ref;
      }
      const vm = host.getVm(sandboxId);
      return host.withVmLock(vm, () => pauseVm(host, vm, snapId));
    }),
  ) as Promise<SnapshotRef>;
}

async function pauseVm(host: Host, vm: Vm, snapId: string): Promise<SnapshotRef> {
  const sandboxId = vm.rec.sandbox_id;
  if (vm.gone) throw new HostdError("not_found", `sandbox ${sandboxId} is not running on this host`);
  await host.checkDiskReserve("pause a sandbox");
  const t0 = now();
  const sdir = host.layout.snapDir(snapId);
  // A pending dir of this id is an attempt a crash interrupted while this VM ran on: nothing of it is needed
  // (moved aside first, as on a failure below: a crash mid-delete leaves a `_gone-` dir the next start deletes).
  await removeDir(sdir);
  await mkdir(sdir, { recursive: true });
  await fsyncDir(host.layout.snaps);
  const meta: SnapMeta = {
    ...baseOf(vm.rec),
    snapshot_id: snapId,
    sandbox_id: sandboxId,
    hostname: vm.rec.hostname,
    disk_mib: vm.rec.disk_mib,
    pause_ms: 0,
    created_at: new Date().toISOString(),
    state: "pending",
    // A fork maps its parent's RAM layer privately: QEMU's stream carries its RAM (memory.ts).
    ram_in_state: vm.rec.ram_base ? true : undefined,
  };
  await writeSnapMeta(sdir, meta);
  const sw = stopwatch();
  await saveState(vm, sdir, sw);
  crashPoint("pause.after_state");
  // From here the VM's RAM and disk belong to the snapshot: a restart finishes the move, never resumes it.
  await writeSnapMeta(sdir, { ...meta, state: "saved" });
  vm.gone = true;
  host.vms.delete(sandboxId);
  vm.agent.close();
  // After the state transfer QEMU writes nothing more (its disk is inactive, RAM is a mapping of the
  // file just flushed), so the files can move while it exits.
  const exited = vm.machine.stop(TIMEOUTS.stopMs);
  try {
    return await moveIntoSnapshot(host, vm, sdir, meta, exited, t0, sw);
  } catch (e) {
    // The files are the snapshot's whatever failed: finish the move as a restart's recovery would, now, so
    // the pause still answers and the VM's slot and cgroup go; else a retry of this id tries again.
    host.log.warn("pause failed after its state was saved; finishing the snapshot", {
      sandbox_id: sandboxId,
      snapshot_id: meta.snapshot_id,
      error: String(e),
    });
    const ref = await finishSaved(host, meta).catch(() => undefined);
    if (ref) return ref;
    throw e;
  }
}

/** A saved pause's snapshot completed (recover.ts `giveBackAll`), or undefined when it could not be. */
async function finishSaved(host: Host, meta: SnapMeta): Promise<SnapshotRef | undefined> {
  const sdir = host.layout.snapDir(meta.snapshot_id);
  const vmDir = host.layout.vmDir(meta.sandbox_id);
  await giveBackAll(host, sdir, meta, await readVmRecord(vmDir));
  const after = await readSnapMeta(sdir);
  return after && snapState(after) === "complete" ? snapRef(host.layout, after) : undefined;
}

async function moveIntoSnapshot(
  host: Host,
  vm: Vm,
  sdir: string,
  meta: SnapMeta,
  exited: Promise<unknown>,
  t0: number,
  sw: ReturnType<typeof stopwatch>,
): Promise<SnapshotRef> {
  const sandboxId = vm.rec.sandbox_id;
  const snapId = meta.snapshot_id;
  for (const f of SNAP_FILES) await rename(join(vm.dir, f), join(sdir, f));
  await Promise.all([fsyncDir(sdir), fsyncDir(vm.dir)]);
  crashPoint("pause.after_rename");
  pauseHooks.afterMove?.();
  const pause_ms = Math.round(now() - t0);
  const complete: SnapMeta = { ...meta, pause_ms, state: "complete" };
  await writeSnapMeta(sdir, complete);
  const ref = await snapRef(host.layout, complete);
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
    // A fork's record named its parent's RAM layer: maybe the last one that did.
    if (vm.rec.ram_base) await gcLayers(host);
  });
  host.log.info("VM paused", { sandbox_id: sandboxId, snapshot_id: snapId, pause_ms, ...sw.laps });
  return ref;
}

/** A sparse RAM file of the guest's size, all holes (what a restore of a stream with RAM fills). */
async function emptyRam(path: string, memMib: number): Promise<void> {
  // In the VM dir: never through a link its QEMU planted (which would truncate the link's target).
  const f = await openRegular(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await f.truncate(memMib * MIB);
    await f.sync();
  } finally {
    await f.close();
  }
}

/** Stops the guest and writes its device state to `sdir`, with RAM and disk flushed; undone on failure. */
async function saveState(vm: Vm, sdir: string, sw: ReturnType<typeof stopwatch>): Promise<void> {
  const ram = join(vm.dir, "ram");
  // A private RAM mapping: the RAM goes into the state; `ram` is the empty file the resume loads it into.
  if (vm.rec.ram_base) await emptyRam(ram, vm.rec.mem_mib);
  let quiesced = false;
  try {
    // Most of a pause is flushing the RAM file's dirty pages: start while the agent quiesces (what the
    // guest dirties meanwhile is caught by the second flush, after the vCPUs stopped).
    const early = fsyncFile(ram).catch(() => undefined);
    // Set before the reply: a quiesce that timed out may still have reached the guest.
    quiesced = true;
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
    await removeDir(sdir);
    if (vm.machine.state === "paused") await vm.machine.resume().catch(() => undefined);
    // A quiesced agent sends nothing more (exec output, files, pty) until told: `thaw` lifts it on the
    // same session (channels go on); an agent from before `thaw` gets a new session with `hello`.
    if (quiesced)
      await vm.agent
        .thaw()
        .catch(() => vm.agent.hello())
        .catch(() => undefined);
    throw e;
  }
}
