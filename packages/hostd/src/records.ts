/**
 * What the host daemon keeps on disk, and the only way it writes it. A restarted daemon re-adopts its
 * VMs and snapshots from these records alone, so every write goes through `writeJsonAtomic` (temp file,
 * fsync, rename, fsync of the directory): a crash leaves the old record or the new one, never a torn one.
 *
 *   <dataDir>/hostd/vms/<sandbox>/        vm.json, qemu.pid, qemu.log, ram, disk.qcow2, console.log (root's dir),
 *                                          run/qmp.sock, run/agent.sock (run/ is the jailed QEMU's: vmm/jail.ts)
 *   <dataDir>/hostd/snapshots/<snap>/     meta.json, ram, state, disk.qcow2
 *   <dataDir>/hostd/layers/<id>.qcow2     frozen disk layers shared by forks (never written again)
 *   <dataDir>/hostd/netpool.json          network namespaces set up ahead of need
 *   <cacheDir>/warm/<hash>-<v>c-<m>m-<d>d/ warm snapshot of a booted image, root fs grown to d MiB (size cap:
 *                                          warm/cap.ts; its `used` marker is the LRU clock)
 */
import { constants } from "node:fs";
import { lstat, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  type Accel,
  HostdError,
  type OverlayMembership,
  type SnapshotRef,
  type VmSpec,
} from "@createos-sandbox/protocol";
import { fsyncDir, writeJsonAtomic } from "./sys/fs.js";
import { fsyncRegular, withRegular } from "./sys/nofollow.js";

interface Logger {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * What a VM is made of, besides its identity: a VM's record and a snapshot's meta both carry it, and a VM
 * started from a snapshot inherits it.
 */
export interface BaseRecord {
  image: string;
  image_hash: string;
  vcpu: number;
  mem_mib: number;
  kernel: string;
  cmdline: string;
  accel: Accel;
  tb_size_mib: number;
  /** Backing layers of disk.qcow2, nearest first (for layer garbage collection). */
  chain: string[];
}

/** Persisted per live VM; enough to re-adopt it after a restart. */
export interface VmRecord extends BaseRecord {
  sandbox_id: string;
  hostname: string;
  slot: number;
  ip: string;
  disk_mib: number;
  created_at: string;
  /** Where QEMU was started, when that differs from the VM dir (a pooled VM renamed into place). */
  launch_dir?: string;
  /**
   * The name of this QEMU's cgroup (sys/cgroup.ts): one per launch, so a resume of the same sandbox never
   * shares a cgroup with the paused QEMU still exiting. Absent in records from before cgroups.
   */
  cgroup?: string;
  /**
   * `starting` from the moment the dir exists until the VM is fully up (agent answered, identity applied);
   * `running` once it is registered. Re-adoption discards a VM that was still starting (its create or fork
   * never answered, and a resume gives its snapshot back). Absent in records from before: running.
   */
  state?: "starting" | "running";
  /** The snapshot a resume is starting this VM from (its files are that snapshot's until it runs). */
  from_snapshot?: string;
  /**
   * A fork's RAM: its parent's frozen RAM layer (`ram-layers/<id>.ram`), mapped privately (copy-on-write)
   * instead of a `ram` file of its own in the VM dir. Layer gc keeps the layer while a record names it.
   */
  ram_base?: string;
  /** The egress allowlist in force (net/egress.ts); absent: allow all. Re-applied on re-adoption. */
  egress?: string[];
  /** The private-network memberships in force (overlay.ts); absent: none. Rebuilt on re-adoption. */
  networks?: OverlayMembership[];
}

/**
 * A snapshot dir's marker (in meta.json, written through writeJsonAtomic so each step is durable before
 * the next begins). The order makes every crash leave the old state or the new one:
 *   pending   a pause or fork is writing it; the device state is not valid yet (the VM still runs)
 *   saved     a pause saved and flushed the device state, RAM and disk: they are the snapshot now, even
 *             while they are still being renamed over from the VM dir; the VM must never run again
 *   complete  everything is in the snapshot dir: resumable and forkable
 *   resuming  a resume is moving the files into the VM dir; the guest has not run yet
 *   consumed  the resumed guest has run (`cont`): the RAM file no longer matches the device state
 * Absent: complete (records from before markers were written only once complete).
 */
export type SnapState = "pending" | "saved" | "complete" | "resuming" | "consumed";

/** Persisted per snapshot (meta.json). */
export interface SnapMeta extends BaseRecord {
  snapshot_id: string;
  sandbox_id: string;
  hostname: string;
  disk_mib: number;
  /** Set once disk.qcow2 is an empty overlay over a frozen layer (a fork froze it): later forks reuse it. */
  frozen?: boolean;
  /** A `start_paused` fork that never ran: its first resume applies the child's identity (configure). */
  needs_configure?: boolean;
  /**
   * The RAM file frozen for forks (`ram-layers/<id>.ram`, a hard link of this snapshot's `ram` made by the
   * first fork): forks map it privately, so it must never be written again. A resume of this snapshot
   * therefore copies `ram` rather than renaming it, and a re-save of the state (whose RAM then differs)
   * drops this field so the next fork freezes anew.
   */
  ram_layer?: string;
  /**
   * The device state carries the RAM (a pause of a fork, whose private RAM block is not "shared" to QEMU);
   * `ram` is then an empty sparse file the restore loads the RAM into.
   */
  ram_in_state?: boolean;
  pause_ms: number;
  created_at: string;
  state?: SnapState;
}

export function snapState(m: SnapMeta): SnapState {
  return m.state ?? "complete";
}

/** Persisted per warm snapshot (meta.json, written last: its presence marks the capture complete). */
export interface WarmMeta {
  key: string;
  image: string;
  image_hash: string;
  vcpu: number;
  mem_mib: number;
  disk_bytes: number;
  kernel: string;
  cmdline: string;
  accel: Accel;
  created_at: string;
}

/** Pooled VMs live under ids no sandbox can have (sandbox ids start with a letter or digit). */
export const POOL_PREFIX = "_pool-";
/** VM dirs being deleted in the background (after a pause). */
export const TRASH_PREFIX = "_trash-";
/**
 * VM and snapshot dirs whose deletion began (renamed first, so a crash mid-delete never leaves a half-
 * deleted dir under its own name); re-adoption finishes the delete.
 */
export const GONE_PREFIX = "_gone-";

/** Deletes a dir crash-safely: renamed aside (durably), then removed. */
export async function removeDir(path: string): Promise<void> {
  const aside = await moveAside(path);
  if (aside) await rm(aside, { recursive: true, force: true });
}

/**
 * Renames a dir to a `_gone-` name, durably (a start deletes those unread), and returns the new path;
 * undefined if there was no dir.
 */
export async function moveAside(path: string): Promise<string | undefined> {
  const aside = join(dirname(path), `${GONE_PREFIX}${basename(path)}-${Date.now().toString(36)}`);
  try {
    await rename(path, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  await fsyncDir(dirname(path));
  return aside;
}

/** Temp files of writeFileAtomic (sys/fs.ts) a crash left: never the only copy of anything. */
export const isTempFile = (name: string) => /\.tmp-\d+-\d+$/.test(name);

/** Whether a dir holds nothing but temp files (a start or pause that got no further than its mkdir). */
export async function holdsNothing(dir: string): Promise<boolean> {
  const names = await readdir(dir).catch(() => ["?"]);
  return names.every(isTempFile);
}

/** Sandbox ids name directories: no separators, no leading dot or underscore (those are ours). */
export const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Snapshot ids name directories too. */
export const SNAPSHOT_ID_RE = /^[A-Za-z0-9_.-]+$/;

/** Where everything lives, for one data dir and one image cache. */
export class Layout {
  readonly root: string;
  readonly vms: string;
  readonly snaps: string;
  readonly layers: string;
  /** Frozen RAM files forks map privately (0700: each file is writable by the forks' jail uids). */
  readonly ramLayers: string;
  readonly warm: string;
  readonly netpool: string;
  /** What re-adoption found and could not explain: moved aside, never deleted. */
  readonly quarantine: string;

  constructor(
    dataDir: string,
    readonly cache: string,
  ) {
    this.root = join(dataDir, "hostd");
    this.vms = join(this.root, "vms");
    this.snaps = join(this.root, "snapshots");
    this.layers = join(this.root, "layers");
    this.ramLayers = join(this.root, "ram-layers");
    this.warm = join(cache, "warm");
    this.netpool = join(this.root, "netpool.json");
    this.quarantine = join(this.root, "quarantine");
  }

  vmDir(id: string): string {
    return join(this.vms, id);
  }

  snapDir(id: string): string {
    return join(this.snaps, id);
  }

  warmDir(key: string): string {
    return join(this.warm, key);
  }
}

/** Just the base fields of a record or meta (a spread would carry the rest along). */
export function baseOf(r: BaseRecord): BaseRecord {
  return {
    image: r.image,
    image_hash: r.image_hash,
    vcpu: r.vcpu,
    mem_mib: r.mem_mib,
    kernel: r.kernel,
    cmdline: r.cmdline,
    accel: r.accel,
    tb_size_mib: r.tb_size_mib,
    chain: r.chain,
  };
}

/** Flushes a data file (RAM, device state, disk layer) that a record is about to point at. */
/** fsync of a regular file; a link (a VM dir's names are its QEMU's to replace) or a FIFO is refused. */
export async function fsyncFile(path: string): Promise<void> {
  await fsyncRegular(path);
}

/** A record, or undefined; never read through a link, a FIFO or a device (sys/nofollow.ts). */
export async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await withRegular(path, constants.O_RDONLY, (fh) => fh.readFile("utf8"))) as T;
  } catch {
    return undefined;
  }
}

export function readVmRecord(dir: string): Promise<VmRecord | undefined> {
  return readJson<VmRecord>(join(dir, "vm.json"));
}

export function writeVmRecord(dir: string, rec: VmRecord): Promise<void> {
  return writeJsonAtomic(join(dir, "vm.json"), rec);
}

export function readSnapMeta(sdir: string): Promise<SnapMeta | undefined> {
  return readJson<SnapMeta>(join(sdir, "meta.json"));
}

export function writeSnapMeta(sdir: string, meta: SnapMeta): Promise<void> {
  return writeJsonAtomic(join(sdir, "meta.json"), meta);
}

export function readWarmMeta(warm: string): Promise<WarmMeta | undefined> {
  return readJson<WarmMeta>(join(warm, "meta.json"));
}

export function writeWarmMeta(warm: string, meta: WarmMeta): Promise<void> {
  return writeJsonAtomic(join(warm, "meta.json"), meta);
}

export function checkSnapshotId(id: string): void {
  if (!SNAPSHOT_ID_RE.test(id)) throw new HostdError("bad_request", "invalid snapshot id");
}

/** The complete snapshot a ref names, or `not_found`. */
export async function snapMeta(layout: Layout, ref: SnapshotRef): Promise<SnapMeta> {
  checkSnapshotId(ref.snapshot_id);
  const m = await readSnapMeta(layout.snapDir(ref.snapshot_id));
  if (!m || snapState(m) !== "complete")
    throw new HostdError("not_found", `snapshot ${ref.snapshot_id} is not on this host`);
  return m;
}

/**
 * Moves `path` aside into the quarantine dir (named after it and the time) instead of deleting what no
 * record explains: an operator can look at it, and nothing a later fix could have used is lost.
 */
export async function quarantine(layout: Layout, path: string, why: string, log: Logger): Promise<void> {
  await mkdir(layout.quarantine, { recursive: true });
  const dest = join(layout.quarantine, `${basename(path)}.${Date.now()}`);
  await rename(path, dest);
  await fsyncDir(dirname(path));
  log.warn("quarantined what re-adoption could not explain", { path, moved_to: dest, why });
}

async function allocatedBytes(path: string): Promise<number> {
  try {
    // lstat: a snapshot's names came from a VM dir, and a planted link must not report a host file's size.
    const s = await lstat(path);
    return s.blocks * 512;
  } catch {
    return 0;
  }
}

/** The API's view of a snapshot; its size is what its files take on disk. */
export async function snapRef(layout: Layout, meta: SnapMeta): Promise<SnapshotRef> {
  const d = layout.snapDir(meta.snapshot_id);
  const size =
    (await allocatedBytes(join(d, "ram"))) +
    (await allocatedBytes(join(d, "state"))) +
    (await allocatedBytes(join(d, "disk.qcow2")));
  return {
    snapshot_id: meta.snapshot_id,
    sandbox_id: meta.sandbox_id,
    mem_mib: meta.mem_mib,
    vcpu: meta.vcpu,
    disk_mib: meta.disk_mib,
    image: meta.image,
    size_bytes: size,
    pause_ms: meta.pause_ms,
  };
}

export function validateSpec(spec: VmSpec): void {
  if (!SANDBOX_ID_RE.test(spec.sandbox_id))
    throw new HostdError("bad_request", `invalid sandbox id ${JSON.stringify(spec.sandbox_id)}`);
  if (!Number.isInteger(spec.vcpu) || spec.vcpu < 1 || spec.vcpu > 64)
    throw new HostdError("bad_request", "vcpu must be an integer between 1 and 64");
  if (!Number.isInteger(spec.mem_mib) || spec.mem_mib < 128 || spec.mem_mib > 256 * 1024)
    throw new HostdError("bad_request", "mem_mib must be an integer between 128 and 262144");
  if (!Number.isInteger(spec.disk_mib) || spec.disk_mib < 64)
    throw new HostdError("bad_request", "disk_mib must be an integer of at least 64");
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(spec.hostname))
    throw new HostdError("bad_request", `invalid hostname ${JSON.stringify(spec.hostname)}`);
}
