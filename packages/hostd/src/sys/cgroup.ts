/**
 * A cgroup per VM, so one guest (or a QEMU bug it triggers) cannot take the host's CPU, memory, pids or
 * disk bandwidth from the others. Two layouts, detected once at start:
 *
 *   v1  <root>/{cpu,memory,pids,blkio}/<parent>/<vm>/   one directory per controller hierarchy
 *   v2  <root>/<parent>/<vm>/                            one unified directory (controllers enabled down
 *                                                        the path through cgroup.subtree_control)
 *
 * `<parent>` is `createos-sandbox/<instance>` (the daemon's data dir, hashed), so two host daemons on one
 * machine never touch each other's cgroups, and `<vm>` is the name the VM was launched under (its launch
 * dir's name: stable across a pooled VM becoming a sandbox and across a daemon restart). The module only
 * needs a pid: whoever starts QEMU hands it the pid once the process exists.
 *
 * The root is a parameter so the unit tests run against a plain directory tree.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, readdir, rmdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { HostdError } from "@createos-sandbox/protocol";

export const CGROUP_ROOT = "/sys/fs/cgroup";

export type CgroupMode = "v1" | "v2" | "none";

export interface CgroupLimits {
  /** CPU time per wall time, percent (100 = one full core). */
  cpuQuotaPct: number;
  memBytes: number;
  pidsMax: number;
  /** Relative I/O share, 1–1000 (only enforced where the block device's scheduler honours it). */
  ioWeight: number;
}

/** QEMU's own memory besides guest RAM and the TCG cache: code, heap, device buffers, page tables. */
export const VMM_OVERHEAD_MIB = 192;
/** QEMU's threads: vCPUs, the main loop, RCU, the block layer's worker pool, the migration thread. */
export const PIDS_MAX = 256;
/** Every VM gets the same I/O share (the kernel's default weight). */
export const IO_WEIGHT = 100;
const CFS_PERIOD_US = 100_000;
const MIB = 1024 * 1024;

/** A VM's limits from its shape: `cpuQuotaPct` when the shape names one, else one core per vCPU. */
export function vmLimits(vm: {
  vcpu: number;
  mem_mib: number;
  tb_size_mib?: number;
  cpu_quota_pct?: number;
}): CgroupLimits {
  return {
    cpuQuotaPct: vm.cpu_quota_pct ?? vm.vcpu * 100,
    memBytes: (vm.mem_mib + VMM_OVERHEAD_MIB + (vm.tb_size_mib ?? 0)) * MIB,
    pidsMax: PIDS_MAX,
    ioWeight: IO_WEIGHT,
  };
}

const V1_REQUIRED = ["cpu", "memory", "pids"] as const;
const V2_REQUIRED = ["cpu", "memory", "pids"] as const;

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

export class Cgroups {
  /** Controller name → the directory of `<parent>` in its hierarchy (v2: all the same directory). */
  private readonly bases = new Map<string, string>();

  private constructor(
    readonly mode: CgroupMode,
    readonly root: string,
    readonly parent: string,
    readonly controllers: string[],
  ) {
    for (const c of controllers)
      this.bases.set(c, mode === "v1" ? join(root, c, parent) : join(root, parent));
  }

  /**
   * v2 when the unified hierarchy at `root` offers cpu, memory and pids; else v1 when those controllers
   * are mounted under `root/<controller>`; else none. A hybrid host (v1 controllers plus an empty v2
   * hierarchy, like ours) is v1: the controllers live where they are mounted.
   */
  static detect(root: string, parent: string): Cgroups {
    const v2 = readFileSafe(join(root, "cgroup.controllers")).split(/\s+/).filter(Boolean);
    if (V2_REQUIRED.every((c) => v2.includes(c)))
      return new Cgroups("v2", root, parent, v2.includes("io") ? [...V2_REQUIRED, "io"] : [...V2_REQUIRED]);
    const v1 = ["cpu", "memory", "pids", "blkio"].filter((c) => existsSync(join(root, c, "cgroup.procs")));
    if (V1_REQUIRED.every((c) => v1.includes(c))) return new Cgroups("v1", root, parent, v1);
    return new Cgroups("none", root, parent, []);
  }

  /** `createos-sandbox/<hash of the data dir>`: one parent per host daemon instance. */
  static parentFor(dataDir: string): string {
    // The absolute path, not its realpath: the dir may not exist yet at the first start.
    let h = 0x811c9dc5;
    for (const ch of resolve(dataDir)) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    return join("createos-sandbox", h.toString(16).padStart(8, "0"));
  }

  get available(): boolean {
    return this.mode !== "none";
  }

  /** The VM's cgroup directories, one per distinct hierarchy (v2: one). */
  dirs(name: string): string[] {
    return [...new Set([...this.bases.values()].map((b) => join(b, name)))];
  }

  private dir(controller: string, name: string): string | undefined {
    const b = this.bases.get(controller);
    return b === undefined ? undefined : join(b, name);
  }

  /** Creates (or re-applies the limits of) the VM's cgroup. Any failure is a HostdError naming the file. */
  async create(name: string, limits: CgroupLimits): Promise<void> {
    if (!this.available) return;
    checkName(name);
    if (this.mode === "v2") await this.enableV2Controllers();
    await Promise.all(
      this.dirs(name).map((d) => mkdir(d, { recursive: true }).catch((e) => fail("create", d, e))),
    );
    if (this.mode === "v1") await this.limitsV1(name, limits);
    else await this.limitsV2(name, limits);
  }

  // The hierarchies are independent, so their files are written at once (each in its own order).
  private async limitsV1(name: string, l: CgroupLimits): Promise<void> {
    const cpu = this.dir("cpu", name) as string;
    const mem = this.dir("memory", name) as string;
    const blkio = this.dir("blkio", name);
    await Promise.all([
      put(join(cpu, "cpu.cfs_period_us"), String(CFS_PERIOD_US)).then(() =>
        put(join(cpu, "cpu.cfs_quota_us"), String(Math.round((l.cpuQuotaPct * CFS_PERIOD_US) / 100))),
      ),
      memoryV1(mem, l.memBytes),
      put(join(this.dir("pids", name) as string, "pids.max"), String(l.pidsMax)),
      blkio ? blkioV1(blkio, l.ioWeight) : undefined,
    ]);
  }

  private async limitsV2(name: string, l: CgroupLimits): Promise<void> {
    const d = this.dirs(name)[0] as string;
    await put(join(d, "cpu.max"), `${Math.round((l.cpuQuotaPct * CFS_PERIOD_US) / 100)} ${CFS_PERIOD_US}`);
    await put(join(d, "memory.max"), String(l.memBytes));
    await putIfExists(join(d, "memory.swap.max"), "0");
    await put(join(d, "pids.max"), String(l.pidsMax));
    const w = ["io.weight", "io.bfq.weight"].map((f) => join(d, f)).find((f) => existsSync(f));
    if (w) await put(w, String(l.ioWeight));
  }

  /** v2 only lets a child use a controller its parent enabled for its children, all the way down. */
  private async enableV2Controllers(): Promise<void> {
    const want = this.controllers.map((c) => `+${c}`).join(" ");
    let d = this.root;
    for (const part of this.parent.split("/")) {
      await put(join(d, "cgroup.subtree_control"), want);
      d = join(d, part);
      await mkdir(d, { recursive: true }).catch((e) => fail("create", d, e));
    }
    await put(join(d, "cgroup.subtree_control"), want);
  }

  /**
   * Moves `pid` (all its threads) into the VM's cgroup and checks that it arrived. The hierarchies are
   * written at once: a v1 migration waits out an RCU grace period, and concurrent ones share it.
   */
  async enter(name: string, pid: number): Promise<void> {
    if (!this.available) return;
    checkName(name);
    await Promise.all(this.dirs(name).map((d) => put(join(d, "cgroup.procs"), String(pid))));
    for (const d of this.dirs(name)) {
      if (!(await procsOf(d)).includes(pid))
        throw new HostdError("internal", `cgroup: pid ${pid} is not in ${d} after moving it there`);
    }
  }

  /**
   * Re-adoption: a VM's cgroup outlives the daemon, limits and all, so an existing one is kept as it is
   * (its CPU quota may be the shape's); a missing one (a VM from before cgroups) is made with `limits`.
   * Either way `pid` ends up in it.
   */
  async adopt(name: string, pid: number, limits: CgroupLimits): Promise<void> {
    if (!this.available) return;
    checkName(name);
    if (!this.dirs(name).every((d) => existsSync(d))) await this.create(name, limits);
    if (!(await this.contains(name, pid))) await this.enter(name, pid);
  }

  /** True when `pid` is in every hierarchy's cgroup of the VM (what re-adoption checks). */
  async contains(name: string, pid: number): Promise<boolean> {
    if (!this.available) return true;
    for (const d of this.dirs(name)) if (!(await procsOf(d)).includes(pid)) return false;
    return true;
  }

  /**
   * Removes the VM's cgroup; idempotent. Called once its QEMU is gone: anything still in it (a child a
   * stuck QEMU left) is the VM's own and is killed first, since a cgroup with processes cannot be removed.
   */
  async remove(name: string): Promise<void> {
    if (!this.available) return;
    checkName(name);
    // Every hierarchy is tried; the first failure in `dirs` order is the one reported, so the error
    // does not depend on which rmdir happened to finish first.
    const results = await Promise.allSettled(this.dirs(name).map((d) => removeDir(d)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  /** Names of the VM cgroups under this daemon's parent (for leftover cleanup on start). */
  async names(): Promise<string[]> {
    if (!this.available) return [];
    const out = new Set<string>();
    for (const b of this.bases.values()) {
      const ents = await readdir(b, { withFileTypes: true }).catch(() => []);
      for (const e of ents) if (e.isDirectory()) out.add(e.name);
    }
    return [...out];
  }

  /** Removes this daemon's parent once no VM cgroup is left in it (a busy one stays), and then the shared
   * `createos-sandbox` once no daemon's is left. */
  async removeParent(): Promise<void> {
    if (!this.available) return;
    for (const b of new Set(this.bases.values())) {
      await rmdir(b).catch(() => undefined);
      await rmdir(dirname(b)).catch(() => undefined);
    }
  }

  /** For doctor: create and remove a probe cgroup under the parent. */
  async probe(): Promise<string | undefined> {
    if (!this.available) return "no usable cgroup hierarchy";
    const name = `doctor-${process.pid}`;
    try {
      await this.create(name, { cpuQuotaPct: 100, memBytes: 64 * MIB, pidsMax: 16, ioWeight: IO_WEIGHT });
      await this.remove(name);
      await this.removeParent();
      return undefined;
    } catch (e) {
      await this.remove(name).catch(() => undefined);
      return String((e as Error).message);
    }
  }
}

async function removeDir(d: string): Promise<void> {
  if (!existsSync(d)) return;
  for (let i = 0; i < 200; i++) {
    const pids = await procsOf(d);
    if (pids.length === 0) break;
    for (const p of pids) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  await rmdir(d).catch((e) => {
    if (errno(e) !== "ENOENT") fail("remove", d, e);
  });
}

async function memoryV1(mem: string, memBytes: number): Promise<void> {
  // memsw (RAM + swap) may never be below the RAM limit: raise memsw first, lower it last.
  const memsw = join(mem, "memory.memsw.limit_in_bytes");
  const cur = Number(readFileSafe(join(mem, "memory.limit_in_bytes")).trim());
  const raising = Number.isFinite(cur) && memBytes > cur;
  if (raising) await putIfExists(memsw, String(memBytes));
  await put(join(mem, "memory.limit_in_bytes"), String(memBytes));
  if (!raising) await putIfExists(memsw, String(memBytes));
  await putIfExists(join(mem, "memory.swappiness"), "0");
  // Charges do not move with QEMU (move_charge_at_immigrate is refused by current kernels): RAM-file
  // pages the daemon's copy brought in stay the daemon's; every page the guest touches after is the VM's.
}

async function blkioV1(blkio: string, ioWeight: number): Promise<void> {
  // CFQ's blkio.weight is gone from current kernels; BFQ's takes its place.
  const w = ["blkio.weight", "blkio.bfq.weight"].map((f) => join(blkio, f)).find((f) => existsSync(f));
  if (w) await put(w, String(Math.max(10, ioWeight)));
}

function checkName(name: string): void {
  // A leading "_" is the warm pool's (`_pool-…`); "." and ".." can never match.
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name))
    throw new HostdError("internal", `bad cgroup name ${JSON.stringify(name)}`);
}

function fail(what: string, path: string, e: unknown): never {
  throw new HostdError("internal", `cgroup: cannot ${what} ${path}: ${errno(e)}`);
}

async function put(path: string, value: string): Promise<void> {
  await writeFile(path, value).catch((e) => {
    throw new HostdError("internal", `cgroup: cannot write ${JSON.stringify(value)} to ${path}: ${errno(e)}`);
  });
}

/** Knobs a kernel may lack (swap accounting off, no BFQ): set when present, and then a failure counts. */
async function putIfExists(path: string, value: string): Promise<void> {
  if (existsSync(path)) await put(path, value);
}

async function procsOf(dir: string): Promise<number[]> {
  const raw = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
  return raw.split("\n").filter(Boolean).map(Number);
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
