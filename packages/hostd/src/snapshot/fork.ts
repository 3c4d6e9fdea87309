/**
 * Fork: the parent snapshot's top disk layer is frozen (once) and the child gets an overlay of its own on
 * it, and a RAM file of its own: a reflink clone of the parent's where the snapshot store has reflinks
 * (store.ts: no data copied, the blocks shared until either side writes), else a sparse copy; or, opt-in
 * (`forkRam: map`), a private copy-on-write mapping of the parent's frozen RAM layer (memory.ts). It
 * restores and is configured with its own identity. The parent stays resumable and forkable.
 * `start_paused` only writes the child's snapshot dir (pending until every file is copied, then
 * complete), under the id the control plane chose. Idempotent by the child: a repeat joins the fork in
 * flight, or answers the child VM or snapshot it made.
 */
import { randomUUID } from "node:crypto";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type SnapshotRef, type VmRuntime, type VmSpec } from "@createos-sandbox/protocol";
import { TIMEOUTS, bringUp, now } from "../bringup.js";
import { type Host, runtimeOf } from "../host.js";
import {
  type SnapMeta,
  baseOf,
  checkSnapshotId,
  fsyncFile,
  readSnapMeta,
  removeDir,
  snapMeta,
  snapRef,
  snapState,
  validateSpec,
  writeSnapMeta,
  writeVmRecord,
} from "../records.js";
import { crashPoint } from "../sys/crash.js";
import { fsyncDir } from "../sys/fs.js";
import { viaFd } from "../sys/nofollow.js";
import { freezeParent, freezeRam, withLayerLock } from "./layers.js";
import { cloneRam } from "./store.js";

export interface ForkOpts {
  start_paused?: boolean;
  /** The child snapshot's id (`start_paused`): the control plane's, recorded before the call. */
  snapshot_id?: string;
}

export type ForkResult = { runtime?: VmRuntime; snapshot?: SnapshotRef };

/** What a fork took from its parent: the parent's meta, the child's chain and its RAM layer if mapped. */
type Copied = { meta: SnapMeta; base: string; chain: string[]; ramBase?: string };

export function fork(host: Host, parent: SnapshotRef, child: VmSpec, opts: ForkOpts): Promise<ForkResult> {
  validateSpec(child);
  const snapId = opts.snapshot_id ?? `snap-${randomUUID()}`;
  checkSnapshotId(snapId);
  return host.ops.do(`start:${child.sandbox_id}`, async () => {
    const t0 = now();
    const vm = host.vms.get(child.sandbox_id);
    if (vm && !vm.gone) return { runtime: runtimeOf(child, vm.rec, t0, "fork") };
    const made = opts.start_paused ? await readSnapMeta(host.layout.snapDir(snapId)) : undefined;
    if (made && snapState(made) === "complete" && made.sandbox_id === child.sandbox_id)
      return { snapshot: await snapRef(host.layout, made) };
    return forkNew(host, parent, child, { ...opts, snapshot_id: snapId }, t0);
  }) as Promise<ForkResult>;
}

async function forkNew(
  host: Host,
  parent: SnapshotRef,
  child: VmSpec,
  opts: ForkOpts & { snapshot_id: string },
  t0: number,
): Promise<ForkResult> {
  await host.checkDiskReserve("fork a sandbox");
  const meta0 = await snapMeta(host.layout, parent);
  if (child.disk_mib < meta0.disk_mib)
    throw new HostdError("bad_request", "a fork's disk_mib cannot be smaller than its parent's");
  const psdir = host.layout.snapDir(meta0.snapshot_id);
  /**
   * Under the parent's lock (a resume of the parent consumes its files): freeze its disk, copy its device
   * state and top layer into `dest` (on a reflink store `copyFile` clones: copy_file_range), and its RAM:
   * frozen and mapped (`ram_base`) when the daemon's `forkRam` is `map`, or cloned: by default (daemon.ts
   * says why), and where the child needs a file of its
   * own (a `start_paused` child's snapshot dir; a parent whose state carries its RAM, whose `ram` is empty). Once frozen, the parent's top layer is an empty overlay on the frozen
   * layer, so a copy of it is the child's overlay, without a qemu-img run. `record` writes the child's
   * record naming the parent's layers: still under the parent's lock (the parent keeps its own reference
   * meanwhile) and under the layer lock (layers.ts: gc may have read past the child's record already).
   */
  const copyParent = <R>(dest: string, mapRam: boolean, record: (c: Copied) => Promise<R>, sync = false) =>
    host.withSnapLock(parent.snapshot_id, async () => {
      const m = await snapMeta(host.layout, parent);
      const f = await freezeParent(host, m);
      const map = mapRam && !m.ram_in_state;
      const ramBase = map ? await freezeRam(host, m) : undefined;
      await Promise.all([
        map ? undefined : cloneRam(host.store, join(psdir, "ram"), join(dest, "ram")),
        // The parent's files came from its VM dir: a link a QEMU planted there is refused, not copied.
        viaFd(join(psdir, "state"), (from) => copyFile(from, join(dest, "state"))),
        viaFd(join(psdir, "disk.qcow2"), (from) => copyFile(from, join(dest, "disk.qcow2"))),
      ]);
      // A snapshot's files are durable before its meta.json says complete (outside the layer lock: slow).
      if (sync) {
        await Promise.all(["ram", "state", "disk.qcow2"].map((n) => fsyncFile(join(dest, n))));
        await fsyncDir(dest);
      }
      const c: Copied = { meta: m, ramBase, ...f };
      return { ...c, recorded: await withLayerLock(host, () => record(c)) };
    });
  if (opts.start_paused)
    return {
      snapshot: await forkPaused(host, child, opts.snapshot_id, meta0, t0, (dest, record) =>
        copyParent(dest, false, record, true),
      ),
    };

  host.checkCapacity(meta0.mem_mib);
  return host.withReservedId(child.sandbox_id, async () => {
    let parentDisk = meta0.disk_mib;
    const { vm, laps } = await bringUp(host, {
      spec: child,
      start: {
        base: baseOf(meta0),
        boot: { restore: join(host.layout.vmDir(child.sandbox_id), "state"), ramInState: meta0.ram_in_state },
      },
      files: async (p) => {
        const { meta } = await copyParent(p.dir, host.forkRam === "map", async ({ chain, ramBase }) => {
          p.rec.chain = chain;
          p.rec.ram_base = ramBase;
          await writeVmRecord(p.dir, p.rec);
        });
        parentDisk = meta.disk_mib;
        crashPoint("fork.after_copy");
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
  snapId: string,
  parentMeta: SnapMeta,
  t0: number,
  copyParent: (dest: string, record: (c: Copied) => Promise<SnapMeta>) => Promise<{ recorded: SnapMeta }>,
): Promise<SnapshotRef> {
  const sdir = host.layout.snapDir(snapId);
  // A pending dir of this id is a copy a crash interrupted: started again from the parent. Deleted (as
  // below) moved aside first, so a crash mid-delete leaves a `_gone-` dir the next start deletes.
  await removeDir(sdir);
  await mkdir(sdir, { recursive: true });
  await fsyncDir(host.layout.snaps);
  try {
    await writeSnapMeta(sdir, {
      ...parentMeta,
      snapshot_id: snapId,
      sandbox_id: child.sandbox_id,
      state: "pending",
    });
    const { recorded } = await copyParent(sdir, async ({ meta, chain }) => {
      const m: SnapMeta = {
        ...meta,
        snapshot_id: snapId,
        sandbox_id: child.sandbox_id,
        // The child's own identity is applied by configure when it is resumed.
        hostname: child.hostname,
        needs_configure: true,
        // Its `ram` is a copy of its own: the parent's RAM layer is not this snapshot's.
        ram_layer: undefined,
        disk_mib: child.disk_mib,
        chain,
        frozen: true,
        pause_ms: Math.round(now() - t0),
        created_at: new Date().toISOString(),
        state: "complete",
      };
      await writeSnapMeta(sdir, m);
      return m;
    });
    return await snapRef(host.layout, recorded);
  } catch (e) {
    await removeDir(sdir);
    throw e;
  }
}
