/**
 * Resume: the snapshot's RAM file and top disk layer are renamed into the new VM dir (a `share=on` RAM
 * file is written by the VM that maps it), restored, and the agent's clock and RNG synced. A snapshot whose
 * RAM forks map (`ram_layer`) has its RAM file cloned instead (store.ts): the frozen file must never be
 * written. The snapshot is consumed only once the VM runs: until the guest's first instruction its files go back unchanged on any
 * failure; after it, the device state is saved again first (`resave`), so what goes back is consistent.
 * Idempotent by the sandbox id: a repeat joins the resume in flight or answers the VM it started.
 */
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef, type VmRuntime, type VmSpec } from "@createos-sandbox/protocol";
import { TIMEOUTS, bringUp, now, stopwatch } from "../bringup.js";
import { type Host, runtimeOf } from "../host.js";
import {
  type SnapMeta,
  baseOf,
  fsyncFile,
  removeDir,
  snapMeta,
  validateSpec,
  writeSnapMeta,
  writeVmRecord,
} from "../records.js";
import { crashPoint } from "../sys/crash.js";
import { fsyncDir } from "../sys/fs.js";
import type { Machine } from "../vmm/driver.js";
import { gcLayers, withLayerLock } from "./layers.js";
import { SNAP_FILES } from "./pause.js";
import { cloneRam } from "./store.js";

export function resume(host: Host, snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
  validateSpec(spec);
  return host.ops.do(`start:${spec.sandbox_id}`, async () => {
    const t0 = now();
    const running = host.vms.get(spec.sandbox_id);
    if (running && !running.gone && running.rec.from_snapshot === snapshot.snapshot_id)
      return runtimeOf(spec, running.rec, t0, "resume");
    host.checkCapacity(snapshot.mem_mib);
    return host.withReservedId(spec.sandbox_id, () =>
      host.withSnapLock(snapshot.snapshot_id, () => resumeLocked(host, snapshot, spec, t0)),
    );
  }) as Promise<VmRuntime>;
}

async function resumeLocked(host: Host, snapshot: SnapshotRef, spec: VmSpec, t0: number): Promise<VmRuntime> {
  const meta = await snapMeta(host.layout, snapshot);
  if (spec.disk_mib < meta.disk_mib) throw new HostdError("bad_request", "disk_mib cannot shrink");
  // Only a copy of the RAM (a RAM layer's snapshot) writes new data: as much as the guest's memory.
  if (meta.ram_layer) await host.checkDiskReserve("resume a sandbox");
  const sdir = host.layout.snapDir(meta.snapshot_id);
  const mark = (state: SnapMeta["state"]) => writeSnapMeta(sdir, { ...meta, state });
  await mark("resuming");
  let consumed = false;
  // Until `files` pushes the undo that gives the files back, a failure (no slot, the namespace, the VM
  // dir, vm.json) has moved nothing: the marker goes back here, or the snapshot stayed `resuming` — hidden
  // from the list and refused by every resume — until the next start's re-adoption.
  let givesBack = false;
  const up = await bringUp(host, {
    spec,
    start: { base: baseOf(meta), boot: { restore: join(sdir, "state"), ramInState: meta.ram_in_state } },
    files: async (p, undo) => {
      // Runs after QEMU stopped: the snapshot gets its files back, complete unless the guest ran and its
      // state could not be saved again (then it stays `consumed`, which no resume accepts).
      undo.push(async () => {
        await giveBack(sdir, p.dir, meta);
        if (!consumed) await mark("complete");
        else
          host.log.error("snapshot lost: its resumed guest ran and could not be saved again", {
            snapshot_id: meta.snapshot_id,
            sandbox_id: spec.sandbox_id,
          });
      });
      givesBack = true;
      p.rec.from_snapshot = meta.snapshot_id;
      await writeVmRecord(p.dir, p.rec);
      for (const f of SNAP_FILES) {
        if (f === "ram" && meta.ram_layer) await copyRam(host, join(sdir, f), join(p.dir, f));
        else await rename(join(sdir, f), join(p.dir, f));
      }
      await Promise.all([fsyncDir(sdir), fsyncDir(p.dir)]);
      crashPoint("resume.after_rename");
    },
    guestRuns: {
      mark: async () => {
        consumed = true;
        await mark("consumed");
      },
      undo: async (m) => {
        await resave(m, sdir, join(host.layout.vmDir(spec.sandbox_id)));
        consumed = false;
        // The RAM given back is the copy the guest ran on: no longer the frozen layer's.
        meta.ram_layer = undefined;
        meta.ram_in_state = undefined;
      },
    },
    agentMs: TIMEOUTS.restoreAgentMs,
    // A `start_paused` fork gets its own identity on first run; otherwise it is the same sandbox and
    // only the clock and the RNG moved on while it was paused.
    identity: meta.needs_configure ? "configure" : "sync",
    grow: () => spec.disk_mib > meta.disk_mib,
    register: true,
  }).catch(async (e: unknown) => {
    if (!givesBack)
      await mark("complete").catch((err) =>
        host.log.error("a failed resume could not mark its snapshot complete again", {
          snapshot_id: meta.snapshot_id,
          error: String(err),
        }),
      );
    throw e;
  });
  const { vm, laps } = up;
  const sw = stopwatch();
  await dropSnapshot(host, sdir);
  // Its RAM layer may now be named by nothing (no fork left).
  if (meta.ram_layer) host.background(() => gcLayers(host));
  sw.lap("drop_snapshot");
  const rt = runtimeOf(spec, vm.rec, t0, "resume");
  host.log.info("VM resumed", { sandbox_id: spec.sandbox_id, spawn_ms: rt.spawn_ms, ...laps, ...sw.laps });
  return rt;
}

/**
 * The resumed VM's record names the snapshot's layers now: the snapshot dir goes (crash-safely, moved aside
 * first), under the layer lock, since gc may have read vms/ before that record was written (layers.ts).
 */
export async function dropSnapshot(host: Pick<Host, "layerLock">, sdir: string): Promise<void> {
  await withLayerLock(host, () => removeDir(sdir));
}

/**
 * A RAM layer's snapshot keeps its `ram` (forks map the same file): the VM gets a copy, made under a temp
 * name and renamed into place, so `ram` in the VM dir is only ever a whole copy (a copy cut short by a
 * full disk, a timeout or a SIGKILL leaves only the temp, which goes with the VM dir).
 */
async function copyRam(host: Host, src: string, dst: string): Promise<void> {
  const tmp = `${dst}.copying`;
  try {
    await cloneRam(host.store, src, tmp);
    await rename(tmp, dst);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Moves whichever of the snapshot's files are in the VM dir back into the snapshot dir. With `ram_layer`
 * the snapshot's own `ram` never left (copyRam): the VM dir's is a copy the guest never ran on (a resume
 * whose guest ran saves its state again and clears `ram_layer` first), deleted instead — moved back, a
 * copy cut short would have replaced the snapshot's whole RAM.
 */
export async function giveBack(
  sdir: string,
  vmDir: string,
  meta: Pick<SnapMeta, "ram_layer">,
): Promise<void> {
  for (const f of SNAP_FILES) {
    if (f === "ram" && meta.ram_layer) {
      await rm(join(vmDir, f), { force: true });
      continue;
    }
    await rename(join(vmDir, f), join(sdir, f)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
    });
  }
  await fsyncDir(sdir);
}

/**
 * A guest that ran after its restore: stop it and save its device state over the snapshot's (write, fsync,
 * rename), with RAM and disk flushed, so RAM file, disk and state agree again — at a later moment.
 */
export async function resave(m: Machine, sdir: string, vmDir: string): Promise<void> {
  if (m.state === "running") await m.pause();
  const next = join(sdir, "state.new");
  await m.snapshot(next);
  await Promise.all([fsyncFile(next), fsyncFile(join(vmDir, "ram")), fsyncFile(join(vmDir, "disk.qcow2"))]);
  await rename(next, join(sdir, "state"));
  await fsyncDir(sdir);
}
