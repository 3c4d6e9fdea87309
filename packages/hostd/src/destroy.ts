/** Destroy a VM (live, or left behind by a crash), delete a snapshot, grow a disk. All idempotent or checked. */
import { existsSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { HostdError, type SnapshotRef } from "@createos-sandbox/protocol";
import { TIMEOUTS, growDisk } from "./bringup.js";
import type { Host } from "./host.js";
import {
  SANDBOX_ID_RE,
  SNAPSHOT_ID_RE,
  readSnapMeta,
  readVmRecord,
  removeDir,
  snapRef,
  snapState,
  writeVmRecord,
} from "./records.js";
import { gcLayers } from "./snapshot/layers.js";

export async function destroy(host: Host, sandboxId: string): Promise<void> {
  if (!SANDBOX_ID_RE.test(sandboxId)) return;
  await host.untilStarted(sandboxId);
  const vm = host.vms.get(sandboxId);
  if (vm) {
    await host.withVmLock(vm, async () => {
      vm.gone = true;
      if (host.vms.get(sandboxId) === vm) host.vms.delete(sandboxId);
      vm.agent.close();
      await vm.machine.stop(TIMEOUTS.stopMs);
      await host.cleanupVmFiles(vm.rec, vm.dir);
    });
    return;
  }
  // A record without a live entry: a VM a crash left behind, or one whose QEMU died.
  const dir = host.layout.vmDir(sandboxId);
  if (!existsSync(dir)) return;
  const rec = await readVmRecord(dir);
  await host.killStale(dir, rec?.launch_dir);
  if (rec) await host.cleanupVmFiles(rec, dir);
  else await rm(dir, { recursive: true, force: true });
}

export async function deleteSnapshot(host: Host, snapshot: SnapshotRef): Promise<void> {
  if (!SNAPSHOT_ID_RE.test(snapshot.snapshot_id)) return;
  await host.withSnapLock(snapshot.snapshot_id, () => removeDir(host.layout.snapDir(snapshot.snapshot_id)));
  await gcLayers(host);
}

/** Every complete snapshot on this host (what re-adoption kept or finished, and what pauses made since). */
export async function listSnapshots(host: Host): Promise<SnapshotRef[]> {
  const refs: SnapshotRef[] = [];
  for (const name of await readdir(host.layout.snaps).catch(() => [] as string[])) {
    const m = await readSnapMeta(host.layout.snapDir(name));
    if (m && m.snapshot_id === name && snapState(m) === "complete") refs.push(await snapRef(host.layout, m));
  }
  return refs;
}

export async function resizeDisk(host: Host, sandboxId: string, diskMib: number): Promise<void> {
  const vm = host.getVm(sandboxId);
  await host.withVmLock(vm, async () => {
    if (!Number.isInteger(diskMib) || diskMib <= vm.rec.disk_mib)
      throw new HostdError("bad_request", `disk can only grow (now ${vm.rec.disk_mib} MiB)`);
    await growDisk(vm, diskMib);
    vm.rec.disk_mib = diskMib;
    await writeVmRecord(vm.dir, vm.rec);
  });
}
