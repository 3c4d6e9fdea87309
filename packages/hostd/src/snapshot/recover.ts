/**
 * Re-adoption's first pass: every snapshot dir a crash left mid-way is finished or rolled back by its
 * marker (records.ts `SnapState`) before any VM dir is looked at, so that pass sees settled dirs. What no
 * marker explains is quarantined, never deleted.
 */
import { existsSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Host } from "../host.js";
import { slotAddrs } from "../net/index.js";
import {
  GONE_PREFIX,
  type SnapMeta,
  type SnapState,
  type VmRecord,
  holdsNothing,
  quarantine,
  readSnapMeta,
  readVmRecord,
  removeDir,
  snapState,
  writeSnapMeta,
} from "../records.js";
import { fsyncDir } from "../sys/fs.js";
import { finishFreeze } from "./layers.js";
import { giveBack, resave } from "./resume.js";

export type SnapRecovery =
  /** complete: nothing to do */
  | "keep"
  /** pending: the state was never valid, and the VM (a pause's) runs on or the copy (a fork's) restarts */
  | "discard"
  /** saved or resuming: the files are the snapshot's, move them all into its dir and mark it complete */
  | "give_back"
  /** consumed, and the resumed VM was started all the way: it runs, the snapshot was used up */
  | "drop"
  /** consumed, the resumed VM never finished starting but QEMU runs: save its state again, then give back */
  | "resave"
  /** consumed and the guest is gone: RAM no longer matches any device state */
  | "lost";

/** The VM dir of the snapshot's sandbox, as re-adoption found it. */
export interface VmSeen {
  state: VmRecord["state"];
  from_snapshot?: string;
  qemu_alive: boolean;
}

/** What re-adoption does with a snapshot dir in `state`, given its sandbox's VM dir (undefined: none). */
export function snapRecovery(state: SnapState, snapId: string, vm: VmSeen | undefined): SnapRecovery {
  switch (state) {
    case "complete":
      return "keep";
    case "pending":
      return "discard";
    case "saved":
    case "resuming":
      return "give_back";
    case "consumed": {
      const ours = vm?.from_snapshot === snapId && vm.qemu_alive;
      if (!ours) return "lost";
      return (vm.state ?? "running") === "running" ? "drop" : "resave";
    }
  }
}

const FILES = ["ram", "state", "disk.qcow2"];

export async function recoverSnapshots(host: Host): Promise<void> {
  const { layout } = host;
  for (const name of await readdir(layout.snaps)) {
    const sdir = join(layout.snaps, name);
    try {
      await recoverOne(host, name, sdir);
    } catch (e) {
      await quarantine(layout, sdir, `recovery failed: ${String(e)}`, host.log).catch(() => undefined);
    }
  }
}

async function recoverOne(host: Host, name: string, sdir: string): Promise<void> {
  const { layout } = host;
  if (name.startsWith(GONE_PREFIX)) return rm(sdir, { recursive: true, force: true });
  const meta = await readSnapMeta(sdir);
  if (!meta || meta.snapshot_id !== name) {
    // mkdir came first: an empty dir is a pause or fork that wrote nothing yet.
    if (await holdsNothing(sdir)) await rm(sdir, { recursive: true });
    else await quarantine(layout, sdir, "no meta.json naming this snapshot", host.log);
    return;
  }
  if (snapState(meta) === "complete") {
    await finishFreeze(sdir, meta);
    return checkFiles(host, sdir, meta);
  }
  const vmDir = layout.vmDir(meta.sandbox_id);
  const rec = await readVmRecord(vmDir);
  const pid = rec ? await host.pidOfStale(vmDir, rec.launch_dir) : 0;
  const seen = rec ? { state: rec.state, from_snapshot: rec.from_snapshot, qemu_alive: pid > 0 } : undefined;
  const action = snapRecovery(snapState(meta), meta.snapshot_id, seen);
  host.log.warn("recovering an interrupted snapshot", { ...ids(meta), action });
  switch (action) {
    case "keep":
      return;
    // Moved aside first (durably), then deleted: a crash mid-delete leaves a `_gone-` dir the next start
    // deletes, never a half-deleted one under the snapshot's name (quarantined for ever: no meta.json).
    case "discard":
    case "drop":
      return removeDir(sdir);
    case "resave":
      // The state now matches the RAM the guest ran on, no longer a frozen RAM layer, and no longer
      // carries the RAM (the resumed VM's is a shared file): the next fork freezes anew.
      if (rec && (await resaveAdopted(host, rec, vmDir, sdir, pid)))
        return giveBackAll(host, sdir, { ...meta, ram_layer: undefined, ram_in_state: undefined }, rec);
      return lost(host, sdir, meta, rec);
    case "lost":
      return lost(host, sdir, meta, rec);
    case "give_back":
      return giveBackAll(host, sdir, meta, rec);
  }
}

const ids = (m: SnapMeta) => ({ snapshot_id: m.snapshot_id, sandbox_id: m.sandbox_id, state: m.state });

/** A snapshot whose files are missing cannot be resumed: set aside, so the control plane sees it gone. */
async function checkFiles(host: Host, sdir: string, meta: SnapMeta): Promise<void> {
  const missing = FILES.filter((f) => !existsSync(join(sdir, f)));
  if (missing.length > 0)
    await quarantine(host.layout, sdir, `snapshot ${meta.snapshot_id} lacks ${missing.join(", ")}`, host.log);
}

/** The VM dir's QEMU (a pause's, quitting; a resume's, restored) is stopped and the files come home. */
export async function giveBackAll(host: Host, sdir: string, meta: SnapMeta, rec: VmRecord | undefined) {
  const vmDir = host.layout.vmDir(meta.sandbox_id);
  if (rec) await host.killStale(vmDir, rec.launch_dir);
  await giveBack(sdir, vmDir, meta);
  const missing = FILES.filter((f) => !existsSync(join(sdir, f)));
  if (missing.length > 0) return lost(host, sdir, meta, rec);
  await writeSnapMeta(sdir, { ...meta, state: "complete" });
  if (rec) await host.cleanupVmFiles(rec, vmDir);
}

async function lost(host: Host, sdir: string, meta: SnapMeta, rec: VmRecord | undefined): Promise<void> {
  const vmDir = host.layout.vmDir(meta.sandbox_id);
  if (rec?.from_snapshot === meta.snapshot_id) {
    await host.killStale(vmDir, rec.launch_dir);
    await giveBack(sdir, vmDir, meta);
    await host.cleanupVmFiles(rec, vmDir);
  }
  await quarantine(
    host.layout,
    sdir,
    `snapshot ${meta.snapshot_id} (${meta.state}) is no longer consistent`,
    host.log,
  );
}

/** Reconnects to the QEMU of an interrupted resume and saves its device state over the snapshot's. */
async function resaveAdopted(host: Host, rec: VmRecord, vmDir: string, sdir: string, pid: number) {
  try {
    const m = await host.driver.adopt(
      host.machineConfig(rec, vmDir, slotAddrs(rec.slot)),
      pid,
      rec.launch_dir,
    );
    if (!m) return false;
    await resave(m, sdir, vmDir);
    await m.stop(0);
    return true;
  } catch (e) {
    host.log.warn("cannot save an interrupted resume's state again", {
      sandbox_id: rec.sandbox_id,
      error: String(e),
    });
    return false;
  }
}
