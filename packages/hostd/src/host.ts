/**
 * The state every lifecycle module shares: the running VMs, the locks, the slot allocator and namespace
 * pool, the event stream, background work. The daemon façade owns one `Host`; each module (bring-up,
 * pause, resume, fork, destroy, re-adoption, the warm pool) is a function of it.
 */
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  type Accel,
  type HostEvent,
  HostdError,
  type VmRuntime,
  type VmSpec,
} from "@createos-sandbox/protocol";
import { TIMEOUTS } from "./bringup.js";
import { capCaches } from "./cachecap.js";
import type { ImagesApi, Logger, OpenOptions } from "./daemon.js";
import { checkDiskReserve, minFreeDiskMib, numSetting } from "./diskreserve.js";
import { touchImage } from "./images/cap.js";
import {
  GUEST_MAC,
  NetPool,
  type SlotAddrs,
  SlotAllocator,
  TAP,
  firewallConfig,
  teardownSlot,
} from "./net/index.js";
import type { NameProxy } from "./net/proxy.js";
import { overlayEndpoint, overlayReleased } from "./overlay.js";
import { type Layout, type VmRecord, moveAside, readJson } from "./records.js";
import { gcLayers } from "./snapshot/layers.js";
import { type SnapshotStore, forkRamMode } from "./snapshot/store.js";
import { CGROUP_ROOT, Cgroups } from "./sys/cgroup.js";
import { Mutex, SingleFlight, writeJsonAtomic } from "./sys/fs.js";
import { memAvailableMib } from "./sys/index.js";
import { readTail } from "./sys/nofollow.js";
import { capConsoleLog } from "./vmm/devices/console.js";
import type { Machine, MachineConfig, VmmDriver } from "./vmm/driver.js";
import { GuestEventGate } from "./vmm/guest-events.js";
import type { AgentLike } from "./vmm/guest.js";
import { jailIds } from "./vmm/jail.js";
import { isOurQemu } from "./vmm/qemu.js";
import { WarmPool } from "./warm/pool.js";

/** How often console logs are checked against their cap: a guest writes at most a few MiB/s to ttyS0. */
const CONSOLE_CAP_EVERY_MS = 2000;

/** A VM's parts once it runs: what a bring-up produces and what registration keeps. */
export interface VmParts {
  rec: VmRecord;
  dir: string;
  machine: Machine;
  agent: AgentLike;
  addrs: SlotAddrs;
}

export interface Vm extends VmParts {
  /** Serialises lifecycle actions (pause/destroy/resize) on one VM. */
  lock: Promise<unknown>;
  gone: boolean;
}

/** Serialises `fn` after whatever ran on the same lock before (a failure does not block the next). */
function chain<T>(prev: Promise<unknown>, fn: () => Promise<T>): Promise<T> {
  return prev.catch(() => undefined).then(fn);
}

export class Host {
  readonly vms = new Map<string, Vm>();
  /** Sandbox ids with a create/resume/fork in progress (no VM entry yet). */
  readonly starting = new Set<string>();
  /** For each id in `starting`: settles (never rejects) when its create/resume/fork has. */
  private readonly startSettled = new Map<string, Promise<void>>();
  readonly slots: SlotAllocator;
  readonly netPool: NetPool;
  readonly warmPool: WarmPool;
  /** Concurrent first creates of one shape share the cold boot that captures its warm snapshot. */
  readonly warmFlight = new SingleFlight<string>();
  /**
   * Pause, resume and fork in flight, by the id they are idempotent by: a repeat (the control plane
   * retrying after its own restart) joins the one running instead of racing it.
   */
  readonly ops = new SingleFlight<unknown>();
  /** Orders layer gc against the steps that make a layer or hand a reference to one on (snapshot/layers.ts). */
  readonly layerLock = new Mutex();
  /** Each VM's own cgroup (sys/cgroup.ts), under a parent of this daemon instance's. */
  readonly cgroups: Cgroups;
  private readonly events = new EventEmitter();
  private readonly pendingEvents: HostEvent[] = [];
  private readonly snapLocks = new Map<string, Promise<unknown>>();
  private readonly pending = new Set<Promise<void>>();
  private accelP: Promise<Accel> | undefined;
  closed = false;
  /** How forks get their parent's RAM (OpenOptions.forkRam), read once so a bad value fails the open. */
  readonly forkRam: "copy" | "map";
  /** Where VM dirs and snapshots live, and whether it clones (snapshot/store.ts); set by open. */
  store: SnapshotStore = { kind: "plain", reflink: false };
  /** The HTTP/TLS name proxy of the egress allowlists (net/proxy.ts); absent if it could not start. */
  nameProxy: NameProxy | undefined;
  private consoleTimer: NodeJS.Timeout | undefined;
  /** The dirs of the rootfses `resolveImage` answered (an image pinned outside the cache, in tests). */
  private readonly imageDirs = new Set<string>();

  constructor(
    readonly opts: OpenOptions,
    readonly layout: Layout,
    readonly log: Logger,
    readonly img: ImagesApi,
    readonly driver: VmmDriver,
  ) {
    this.forkRam = forkRamMode(opts.forkRam);
    this.slots = new SlotAllocator(() => [...this.vms.values()].map((v) => v.rec.slot));
    this.events.setMaxListeners(0);
    this.netPool = new NetPool(
      this.slots,
      opts.netPool ?? 2,
      layout.netpool,
      (e) => this.log.warn("network pool", { error: String(e) }),
      firewallConfig(opts.privateEgress, process.env, overlayEndpoint(opts.overlay).port),
    );
    this.warmPool = new WarmPool(this);
    this.cgroups = Cgroups.detect(CGROUP_ROOT, Cgroups.parentFor(layout.root));
    if (!this.cgroups.available)
      log.warn("no usable cgroups: VMs run without CPU, memory and pids limits (doctor says why)");
  }

  /** Every few seconds until close, rotates running VMs' console logs past their cap (devices/console.ts). */
  capConsoles(on: boolean): void {
    clearInterval(this.consoleTimer);
    if (!on) return;
    this.consoleTimer = setInterval(() => {
      for (const vm of this.vms.values()) {
        capConsoleLog(vm.machine.paths.console).catch((e) =>
          this.log.warn("console log cap failed", { sandbox_id: vm.rec.sandbox_id, error: String(e) }),
        );
      }
    }, CONSOLE_CAP_EVERY_MS).unref();
  }

  // ---------------------------------------------------------------- events

  onEvent(listener: (e: HostEvent) => void): () => void {
    this.events.on("event", listener);
    // Events found while re-adopting (before anyone could subscribe) go to the first listener.
    const queued = this.pendingEvents.splice(0);
    for (const e of queued) queueMicrotask(() => listener(e));
    return () => this.events.off("event", listener);
  }

  emit(e: HostEvent): void {
    if (this.events.listenerCount("event") === 0) this.pendingEvents.push(e);
    else this.events.emit("event", e);
  }

  /** Work that finishes after the call that started it returned; close() waits for it. */
  background(fn: () => Promise<void>): void {
    const p = fn()
      .catch((e) => this.log.warn("background cleanup failed", { error: String(e) }))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  async drain(): Promise<void> {
    await Promise.all(this.pending);
  }

  // ---------------------------------------------------------------- accelerator, images, capacity

  accel(): Promise<Accel> {
    if (this.opts.accel) return Promise.resolve(this.opts.accel);
    this.accelP ??= (async () => {
      const cached = join(this.layout.cache, "accel.json");
      const osr = (await readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "")).trim();
      const c = await readJson<{ osrelease: string; accel: Accel }>(cached);
      if (c && c.osrelease === osr) return c.accel;
      const kernel = await this.img.ensureKernel();
      const a = await this.driver.probeAccel(kernel);
      this.log.info("accelerator probed", { accel: a });
      await mkdir(this.layout.cache, { recursive: true });
      await writeJsonAtomic(cached, { osrelease: osr, accel: a });
      return a;
    })().catch((e) => {
      this.accelP = undefined;
      throw e;
    });
    return this.accelP;
  }

  async resolveImage(name: string) {
    const cat = this.img.catalog();
    if (!cat.some((i) => i.name === name) && !this.img.builtImage(name)) {
      throw new HostdError(
        "bad_request",
        `unknown image ${JSON.stringify(name)}; known: ${cat.map((i) => i.name).join(", ")}`,
      );
    }
    const built = this.img.builtImage(name) !== undefined;
    const img = await this.img.ensureImage(name);
    // The image cache's LRU clock (images/cap.ts); a new build may have taken it over its cap.
    if (img.rootfs.startsWith(join(this.layout.cache, "rootfs")))
      await touchImage(img.rootfs).catch((e) => this.log.warn("image cache marker", { error: String(e) }));
    if (!built) capCaches(this);
    this.imageDirs.add(dirname(img.rootfs));
    return img;
  }

  /**
   * Where the files below a VM's own disk layer may lie (vmm/jail.ts `diskChain`): what the daemon made
   * disks of — frozen layers, warm disks, the image cache's rootfses, committed images — never a name
   * only a qcow2 header (which a jailed QEMU can rewrite) vouches for.
   */
  diskRoots(): string[] {
    const { layout } = this;
    return [
      layout.layers,
      layout.warm,
      join(layout.cache, "rootfs"),
      join(layout.root, "images"),
      ...this.imageDirs,
    ];
  }

  baseCmdline(): string {
    return this.img.kernelCmdline({ hostKhz: this.img.hostKhz() });
  }

  /**
   * Host memory not yet promised: MemAvailable minus every running VM's RAM size. Guest RAM is file-backed
   * page cache that MemAvailable partly counts as free, so the whole promise is subtracted.
   */
  freeMib(): number {
    return Math.max(0, memAvailableMib() - this.promisedMib());
  }

  /** RAM promised to running VMs and to pooled ones kept ready for the next create. */
  promisedMib(): number {
    let promised = this.warmPool.promisedMib();
    for (const v of this.vms.values()) promised += v.rec.mem_mib;
    return promised;
  }

  /**
   * The free-space reserve (diskreserve.ts), checked before create, pause and fork: on the data dir too,
   * which holds the XFS image of an image store (a full image host filesystem would fail XFS's writes).
   */
  checkDiskReserve(action: string): Promise<void> {
    const reserve = minFreeDiskMib(this.opts.minFreeDiskMib);
    const dirs = [this.layout.root, this.layout.cache];
    if (this.store.image) dirs.push(dirname(this.layout.root));
    return checkDiskReserve(dirs, reserve, action);
  }

  checkCapacity(memMib: number): void {
    const free = this.freeMib();
    if (free < memMib)
      throw new HostdError(
        "capacity",
        `not enough host memory for a ${memMib} MiB VM: ${free} MiB unpromised; pause or delete sandboxes, or use a smaller shape`,
      );
  }

  // ---------------------------------------------------------------- VMs

  machineConfig(rec: VmRecord, dir: string, addrs: SlotAddrs): MachineConfig {
    return {
      dir,
      vcpu: rec.vcpu,
      memMib: rec.mem_mib,
      kernel: rec.kernel,
      cmdline: rec.cmdline,
      ramPath: rec.ram_base ?? join(dir, "ram"),
      ramShared: rec.ram_base === undefined,
      diskPath: join(dir, "disk.qcow2"),
      netns: addrs.netns,
      tap: TAP,
      mac: GUEST_MAC,
      accel: rec.accel,
      tbSizeMib: rec.tb_size_mib,
      jail: {
        ...jailIds(rec.slot),
        cacheDir: this.layout.cache,
        diskRoots: this.diskRoots(),
        cgroups: this.cgroups.available ? this.cgroups.dirs(cgroupName(rec, dir)) : undefined,
      },
    };
  }

  getVm(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm || vm.gone) throw new HostdError("not_found", `no running VM for sandbox ${id} on this host`);
    return vm;
  }

  withVmLock<T>(vm: Vm, fn: () => Promise<T>): Promise<T> {
    const p = chain(vm.lock, fn);
    vm.lock = p.catch(() => undefined);
    return p;
  }

  withSnapLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const p = chain(this.snapLocks.get(id) ?? Promise.resolve(), fn);
    const tail = p.catch(() => undefined);
    this.snapLocks.set(id, tail);
    void tail.then(() => {
      if (this.snapLocks.get(id) === tail) this.snapLocks.delete(id);
    });
    return p;
  }

  /** Runs a create/resume/fork of `id` with the id reserved (no second VM of that sandbox meanwhile). */
  async withReservedId<T>(id: string, fn: () => Promise<T>): Promise<T> {
    if (this.vms.has(id) || this.starting.has(id) || existsSync(this.layout.vmDir(id)))
      throw new HostdError("conflict", `a VM for sandbox ${id} already exists on this host`);
    this.starting.add(id);
    const started = fn();
    this.startSettled.set(
      id,
      started.then(
        () => undefined,
        () => undefined,
      ),
    );
    try {
      return await started;
    } finally {
      this.starting.delete(id);
      this.startSettled.delete(id);
    }
  }

  /**
   * Waits out a create/resume/fork of `id` in progress. A destroy meanwhile would find a record and no VM
   * entry, clean the slot and files the bring-up is still using, and then the bring-up would register a
   * VM nobody destroys (or undo into a slot another VM took): so it waits, then destroys what came of it.
   */
  async untilStarted(id: string): Promise<void> {
    for (let p = this.startSettled.get(id); p; p = this.startSettled.get(id)) await p;
  }

  /** Registers a started VM: agent connected, events wired. */
  register(p: VmParts): Vm {
    const vm: Vm = { ...p, lock: Promise.resolve(), gone: false };
    this.vms.set(p.rec.sandbox_id, vm);
    const id = vm.rec.sandbox_id;
    // Guest-raised events are throttled and coalesced per VM (vmm/guest-events.ts).
    const gate = new GuestEventGate(
      (action, reason) => {
        if (vm.gone) return;
        const e: HostEvent = { type: "self", sandbox_id: id, action };
        if (reason) e.reason = reason;
        this.emit(e);
      },
      (dropped) => this.log.warn("guest self-signals coalesced", { sandbox_id: id, dropped }),
    );
    vm.agent.onSelf((action, reason) => gate.self(action, reason));
    vm.agent.onWarning((msg, fields) => {
      const w = gate.warning();
      if (w.log)
        this.log.warn(msg, {
          sandbox_id: id,
          ...fields,
          ...(w.suppressed ? { suppressed: w.suppressed } : {}),
        });
    });
    void vm.machine.exited.then(() => gate.close());
    this.watchExit(vm);
    return vm;
  }

  private watchExit(vm: Vm): void {
    void vm.machine.exited.then(async (reason) => {
      if (vm.gone || this.closed) return;
      vm.gone = true;
      if (this.vms.get(vm.rec.sandbox_id) === vm) this.vms.delete(vm.rec.sandbox_id);
      this.log.warn("VM exited on its own", { sandbox_id: vm.rec.sandbox_id, reason });
      vm.agent.close();
      await this.cleanupVmFiles(vm.rec, vm.dir).catch(() => undefined);
      this.emit({ type: "vm_exited", sandbox_id: vm.rec.sandbox_id, reason });
    });
  }

  /**
   * Frees a VM's cgroup and slot (namespace) and deletes its files, then the layers nothing backs onto any
   * more. `keep`: what of the record is another VM's now (re-adoption after a crash: a record a crash left
   * can name the slot, launch path or cgroup of a VM that holds it since), left as it is.
   */
  async cleanupVmFiles(rec: VmRecord, dir: string, keep: Kept = {}): Promise<void> {
    // The record leaves its live name first, durably: once the slot is free another VM may take it, and a
    // crash before the record was gone would leave it naming that VM's slot for the next start.
    const aside = await moveAside(dir);
    // Independent of each other once QEMU is gone and the record is out of the way: done at once.
    await Promise.all([
      keep.cgroup ? undefined : this.removeCgroup(cgroupName(rec, dir)),
      keep.slot ? undefined : this.releaseSlot(rec.slot),
      aside && rm(aside, { recursive: true, force: true }),
    ]);
    if (rec.launch_dir && rec.launch_dir !== dir && !keep.launch) await rm(rec.launch_dir, { force: true });
    await gcLayers(this);
  }

  /** Removes a VM's cgroup once its QEMU is gone; a failure is only logged (the next start's sweep retries). */
  async removeCgroup(name: string): Promise<void> {
    await this.cgroups
      .remove(name)
      .catch((e) => this.log.warn("cgroup removal failed", { error: String(e) }));
  }

  async releaseSlot(slot: number): Promise<void> {
    await teardownSlot(slot).catch((e) => this.log.warn("network teardown failed", { error: String(e) }));
    await overlayReleased(this, slot).catch((e) =>
      this.log.warn("overlay release failed", { error: String(e) }),
    );
    await this.netPool.letGo(slot).catch(() => undefined);
    this.slots.release(slot);
  }

  /** The pid of the QEMU a VM dir's pidfile names while it is alive and ours, else 0. */
  async pidOfStale(dir: string, launchDir = dir): Promise<number> {
    const pid = await pidOf(dir);
    return pid > 0 && isOurQemu(pid, launchDir) ? pid : 0;
  }

  /**
   * SIGKILLs the QEMU a VM dir's pidfile names, if it is still ours and not one of `spare` (re-adopted
   * VMs'), and waits for it to go.
   */
  async killStale(dir: string, launchDir = dir, spare?: ReadonlySet<number | undefined>): Promise<void> {
    const pid = await this.pidOfStale(dir, launchDir);
    if (pid > 0 && !spare?.has(pid)) {
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < TIMEOUTS.staleKillPolls && isOurQemu(pid, launchDir); i++)
        await new Promise((r) => setTimeout(r, TIMEOUTS.staleKillPollMs));
    }
  }
}

/** What a VM's cleanup leaves alone because another VM holds it (`cleanupVmFiles`). */
export interface Kept {
  slot?: boolean;
  launch?: boolean;
  cgroup?: boolean;
}

/** A VM's cgroup, as its record names it (a pooled VM keeps it as it becomes a sandbox). */
export function cgroupName(rec: VmRecord, dir: string): string {
  return rec.cgroup ?? basename(rec.launch_dir ?? dir);
}

/** The pid in a VM dir's qemu.pid (0 when there is none). */
export async function pidOf(dir: string): Promise<number> {
  // The VM dir is QEMU's: never read through a link (or a FIFO) it put there.
  return Number((await readTail(join(dir, "qemu.pid"), 64).catch(() => "")).trim());
}

/** The spec's sandbox as the API reports it once it runs. */
export function runtimeOf(spec: VmSpec, rec: VmRecord, t0: number, boot: VmRuntime["boot"]): VmRuntime {
  return { sandbox_id: spec.sandbox_id, ip: rec.ip, spawn_ms: Math.round(performance.now() - t0), boot };
}
