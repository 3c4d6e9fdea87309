/**
 * Fork: the parent snapshot's top disk layer is frozen (once) and the child gets a sparse copy of its RAM
 * file and an overlay of its own, restores, and is configured with its own identity. The parent stays
 * resumable and forkable. `start_paused` only writes the child's snapshot dir.
 */
import { randomUUID } from "node:crypto";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef, type VmRuntime, type VmSpec } from "@createos-sandbox/protocol";
import { TIMEOUTS, bringUp, now } from "../bringup.js";
import { type Host, runtimeOf } from "../host.js";
import {
  type SnapMeta,
  baseOf,
  snapMeta,
  snapRef,
  validateSpec,
  writeSnapMeta,
  writeVmRecord,
} from "../records.js";
import { cpSparse } from "../sys/index.js";
import { freezeParent } from "./layers.js";

export async function fork(
  host: Host,
  parent: SnapshotRef,
  child: VmSpec,
  opts: { start_paused?: boolean },
): Promise<{ runtime?: VmRuntime; snapshot?: SnapshotRef }> {
  validateSpec(child);
  await host.checkDiskReserve("fork a sandbox");
  const t0 = now();
  const meta0 = await snapMeta(host.layout, parent);
  if (child.disk_mib < meta0.disk_mib)
    throw new HostdError("bad_request", "a fork's disk_mib cannot be smaller than its parent's");
  const psdir = host.layout.snapDir(meta0.snapshot_id);
  /**
   * Under the parent's lock (a resume of the parent consumes its files): freeze its disk, copy its RAM
   * file, device state and top layer into `dest`. Once frozen, the parent's top layer is an empty
   * overlay on the frozen layer, so a copy of it is the child's overlay, without a qemu-img run.
   */
  const copyParent = (dest: string) =>
    host.withSnapLock(parent.snapshot_id, async () => {
      const m = await snapMeta(host.layout, parent);
      const f = await freezeParent(host, m);
      await Promise.all([
        cpSparse(join(psdir, "ram"), join(dest, "ram")),
        copyFile(join(psdir, "state"), join(dest, "state")),
        copyFile(join(psdir, "disk.qcow2"), join(dest, "disk.qcow2")),
      ]);
      return { meta: m, ...f };
    });
  if (opts.start_paused) return { snapshot: await forkPaused(host, child, t0, copyParent) };

  host.checkCapacity(meta0.mem_mib);
  return host.withReservedId(child.sandbox_id, async () => {
    let parentDisk = meta0.disk_mib;
    const { vm, laps } = await bringUp(host, {
      spec: child,
      start: { base: baseOf(meta0), boot: { restore: join(host.layout.vmDir(child.sandbox_id), "state") } },
      files: async (p) => {
        const { meta, chain } = await copyParent(p.dir);
        parentDisk = meta.disk_mib;
        p.rec.chain = chain;
        await writeVmRecord(p.dir, p.rec);
      },
      agentMs: TIMEOUTS.restoreAgentMs,
      identity: "configure",
      grow: () => child.disk_mib > parentDisk,
      register: true,
    });
    const rt = runtimeOf(child, vm.rec, t0, "fork");
    host.log.info("VM forked", {
      sandbox_id: child.sandbox_id,
      parent: meta0.snapshot_id,
      spawn_ms: rt.spawn_ms,
      ...laps,
    });
    return { runtime: rt };
  });
}

/** A `start_paused` fork: the child's snapshot dir only, resumed (and configured) later. */
async function forkPaused(
  host: Host,
  child: VmSpec,
  t0: number,
  copyParent: (dest: string) => Promise<{ meta: SnapMeta; chain: string[] }>,
): Promise<SnapshotRef> {
  const snapId = `snap-${randomUUID()}`;
  const sdir = host.layout.snapDir(snapId);
  await mkdir(sdir, { recursive: true });
  try {
    const { meta, chain } = await copyParent(sdir);
    const m: SnapMeta = {
      ...meta,
      snapshot_id: snapId,
      sandbox_id: child.sandbox_id,
      // The child's own identity is applied by configure when it is resumed.
      hostname: child.hostname,
      needs_configure: true,
      disk_mib: child.disk_mib,
      chain,
      frozen: true,
      pause_ms: Math.round(now() - t0),
      created_at: new Date().toISOString(),
    };
    await writeSnapMeta(sdir, m);
    return await snapRef(host.layout, m);
  } catch (e) {
    await rm(sdir, { recursive: true, force: true });
    throw e;
  }
}
