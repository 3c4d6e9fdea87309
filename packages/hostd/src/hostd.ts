/**
 * `LocalHostDaemon`: the VM lifecycle on one host (create from warm snapshots, pause, resume, fork,
 * destroy, re-adoption after a restart). See docs/ARCHITECTURE.md for the on-disk layout and address plan.
 *
 * Files:
 *   <dataDir>/hostd/vms/<sandbox>/        vm.json, qemu.pid, qmp.sock, agent.sock, ram, disk.qcow2, console.log
 *   <dataDir>/hostd/snapshots/<snap>/     meta.json, ram, state, disk.qcow2
 *   <dataDir>/hostd/layers/<id>.qcow2     frozen disk layers shared by forks (never written again)
 *   <cacheDir>/warm/<hash>-<v>c-<m>m-<d>d/ warm snapshot of a booted image, root fs grown to d MiB
 */
import { randomBytes, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { copyFile, lstat, mkdir, open, readFile, readdir, rename, rm, stat, symlink } from "node:fs/promises";
import { join } from "node:path";
import type { Duplex, Readable } from "node:stream";
import {
  type Accel,
  type ExecEvents,
  type ExecRequest,
  type ExecResult,
  type FileStat,
  type HostDaemon,
  type HostEvent,
  type HostInfo,
  HostdError,
  type ImageInfo,
  type Progress,
  type PtyRequest,
  type PtySession,
  type SnapshotRef,
  type VmRuntime,
  type VmSpec,
} from "@createos-sandbox/protocol";
import * as images from "./images/index.js";
import {
  GUEST_MAC,
  NetPool,
  type SlotAddrs,
  SlotAllocator,
  TAP,
  slotAddrs,
  teardownSlot,
} from "./net/index.js";
import {
  Layout,
  POOL_PREFIX,
  SANDBOX_ID_RE,
  SNAPSHOT_ID_RE,
  type SnapMeta,
  TRASH_PREFIX,
  type VmRecord,
  type WarmMeta,
  readJson,
  readSnapMeta,
  readVmRecord,
  readWarmMeta,
  snapMeta,
  snapRef,
  validateSpec,
  writeSnapMeta,
  writeVmRecord,
  writeWarmMeta,
} from "./records.js";
import { SingleFlight, writeJsonAtomic } from "./sys/fs.js";
import { cpSparse, memAvailableMib, qemuImg } from "./sys/index.js";
import type { Machine, MachineConfig, VmmDriver } from "./vmm/driver.js";
import { type AgentLike, connectAgent } from "./vmm/guest.js";
import { QemuDriver, isOurQemu } from "./vmm/qemu.js";

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const nullLog: Logger = { info() {}, warn() {}, error() {} };

/** What the lifecycle needs from the images module; injectable so tests can pin an already-built kernel. */
export interface ImagesApi {
  catalog(): { name: string; description: string; default?: boolean }[];
  builtImage(name: string): { name: string; kernel: string; rootfs: string; hash: string } | undefined;
  ensureImage(
    name: string,
    onProgress?: (p: Progress) => void,
  ): Promise<{ name: string; kernel: string; rootfs: string; hash: string }>;
  ensureKernel(onProgress?: (p: Progress) => void): Promise<string>;
  kernelCmdline(o: { hostKhz: number }): string;
  hostKhz(): number;
}

export interface OpenOptions {
  dataDir: string;
  /** Defaults to the images module's cache dir (~/.cache/createos-sandbox). */
  cacheDir?: string;
  log?: Logger;
  /** Force the accelerator instead of probing (tests, doctor). */
  accel?: Accel;
  /** TCG translation cache, MiB. */
  tbSizeMib?: number;
  /** Replaces parts of the images module (tests, benchmarks against a pinned kernel). */
  images?: Partial<ImagesApi>;
  /**
   * Restored VMs kept running per recently used (image, shape, disk), so a create only renames one
   * into place and configures it (default 1; 0 disables). Under TCG a fresh restore spends most of its
   * time re-translating guest code; a pooled VM has already done that.
   */
  warmPool?: number;
  /** Network namespaces kept ready for new VMs (default 2; 0 disables the pool). */
  netPool?: number;
}

interface PooledVm {
  rec: VmRecord;
  dir: string;
  machine: Machine;
  agent: AgentLike;
  addrs: SlotAddrs;
}

const MAX_POOL_KEYS = 2;

interface Vm {
  rec: VmRecord;
  dir: string;
  machine: Machine;
  agent: AgentLike;
  addrs: SlotAddrs;
  /** Serialises lifecycle actions (pause/destroy/resize) on one VM. */
  lock: Promise<unknown>;
  gone: boolean;
}

const MIB = 1024 * 1024;

function now(): number {
  return performance.now();
}

/** Wall time per step of one operation, for the logs (where the milliseconds go). */
function stopwatch(): { lap(name: string): void; laps: Record<string, number> } {
  let last = now();
  const laps: Record<string, number> = {};
  return {
    laps,
    lap(name: string) {
      const t = now();
      laps[name] = Math.round((t - last) * 10) / 10;
      last = t;
    },
  };
}

function entropy(): string {
  return randomBytes(64).toString("base64");
}

function timeNs(): number {
  // Number loses sub-microsecond precision at this magnitude, which is far below what a guest clock needs.
  return Date.now() * 1e6;
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class LocalHostDaemon implements HostDaemon {
  private readonly layout: Layout;
  private readonly vms = new Map<string, Vm>();
  /** Sandbox ids with a create/resume/fork in progress (no VM entry yet). */
  private readonly starting = new Set<string>();
  private readonly events = new EventEmitter();
  private readonly pendingEvents: HostEvent[] = [];
  private readonly slots: SlotAllocator;
  private readonly pool: NetPool;
  private readonly driver: VmmDriver = new QemuDriver();
  private readonly warmFlight = new SingleFlight<string>();
  private readonly snapLocks = new Map<string, Promise<unknown>>();
  private accelP: Promise<Accel> | undefined;
  private readonly freezing = new Set<string>();
  private readonly pending = new Set<Promise<void>>();
  /** Ready restored VMs by pool key (`<warm key>-<disk>d`), most recently used key last. */
  private readonly vmPool = new Map<string, PooledVm[]>();
  private readonly vmPoolSpecs = new Map<string, { warm: string; spec: VmSpec }>();
  private readonly vmPoolFilling = new Map<string, Promise<void>>();
  private vmPoolTimer: NodeJS.Timeout | undefined;
  private readonly img: ImagesApi;
  private closed = false;
  readonly hostId: string;

  private constructor(
    private readonly opts: OpenOptions,
    private readonly cache: string,
    private readonly log: Logger,
  ) {
    this.layout = new Layout(opts.dataDir, cache);
    this.hostId = "local";
    this.img = {
      catalog: images.catalog,
      builtImage: images.builtImage,
      ensureImage: images.ensureImage,
      ensureKernel: images.ensureKernel,
      kernelCmdline: images.kernelCmdline,
      hostKhz: () => images.hostKhz(),
      ...opts.images,
    };
    this.slots = new SlotAllocator(() => [...this.vms.values()].map((v) => v.rec.slot));
    this.events.setMaxListeners(0);
    this.pool = new NetPool(this.slots, opts.netPool ?? 2, this.layout.netpool, (e) =>
      this.log.warn("network pool", { error: String(e) }),
    );
  }

  static async open(opts: OpenOptions): Promise<LocalHostDaemon> {
    const cache = opts.cacheDir ?? images.cacheDir();
    const d = new LocalHostDaemon(opts, cache, opts.log ?? nullLog);
    for (const p of [d.layout.vms, d.layout.snaps, d.layout.layers]) await mkdir(p, { recursive: true });
    await d.readopt();
    await d.pool.init((slot) => [...d.vms.values()].some((v) => v.rec.slot === slot));
    return d;
  }

  // ---------------------------------------------------------------- info

  private accel(): Promise<Accel> {
    if (this.opts.accel) return Promise.resolve(this.opts.accel);
    this.accelP ??= (async () => {
      const cached = join(this.cache, "accel.json");
      const osr = (await readFile("/proc/sys/kernel/osrelease", "utf8").catch(() => "")).trim();
      const c = await readJson<{ osrelease: string; accel: Accel }>(cached);
      if (c && c.osrelease === osr) return c.accel;
      const kernel = await this.img.ensureKernel();
      const a = await this.driver.probeAccel(kernel);
      this.log.info("accelerator probed", { accel: a });
      await mkdir(this.cache, { recursive: true });
      await writeJsonAtomic(cached, { osrelease: osr, accel: a });
      return a;
    })().catch((e) => {
      this.accelP = undefined;
      throw e;
    });
    return this.accelP;
  }

  async info(): Promise<HostInfo> {
    const cat = this.img.catalog();
    const built: string[] = [];
    for (const img of cat) if (this.img.builtImage(img.name)) built.push(img.name);
    let accel: Accel = "tcg";
    let notReady: string | undefined;
    const kernelBuilt = built.length > 0;
    if (kernelBuilt || this.opts.accel) {
      try {
        accel = await this.accel();
      } catch (e) {
        notReady = `accelerator probe failed: ${(e as Error).message}`;
      }
    } else notReady = "no image is built yet (kernel ~6 min and rootfs builds run on first use)";
    const info: HostInfo = {
      id: this.hostId,
      status: this.closed ? "dead" : "active",
      accel,
      free_mib: this.freeMib(),
      vm_count: this.vms.size,
      rootfses: built,
    };
    if (notReady) info.not_ready_reason = notReady;
    return info;
  }

  /**
   * Host memory not yet promised: MemAvailable minus every running VM's RAM size. Guest RAM is file-backed
   * page cache that MemAvailable partly counts as free, so the whole promise is subtracted.
   */
  private freeMib(): number {
    let promised = 0;
    for (const v of this.vms.values()) promised += v.rec.mem_mib;
    for (const list of this.vmPool.values()) for (const pv of list) promised += pv.rec.mem_mib;
    return Math.max(0, memAvailableMib() - promised);
  }

  private checkCapacity(memMib: number): void {
    const free = this.freeMib();
    if (free < memMib)
      throw new HostdError(
        "capacity",
        `not enough host memory for a ${memMib} MiB VM: ${free} MiB unpromised; pause or delete sandboxes, or use a smaller shape`,
      );
  }

  async images(): Promise<ImageInfo[]> {
    const cat = this.img.catalog();
    const out: ImageInfo[] = [];
    for (const img of cat) {
      const i: ImageInfo = {
        name: img.name,
        description: img.description,
        built: !!this.img.builtImage(img.name),
      };
      if (img.default) i.default = true;
      out.push(i);
    }
    return out;
  }

  async ensureImage(name: string, onProgress?: (p: Progress) => void): Promise<void> {
    await this.img.ensureImage(name, onProgress);
  }

  // ---------------------------------------------------------------- events

  onEvent(listener: (e: HostEvent) => void): () => void {
    this.events.on("event", listener);
    // Events found while re-adopting (before anyone could subscribe) go to the first listener.
    const queued = this.pendingEvents.splice(0);
    for (const e of queued) queueMicrotask(() => listener(e));
    return () => this.events.off("event", listener);
  }

  private emit(e: HostEvent): void {
    if (this.events.listenerCount("event") === 0) this.pendingEvents.push(e);
    else this.events.emit("event", e);
  }

  // ---------------------------------------------------------------- helpers

  private machineConfig(rec: VmRecord, dir: string, addrs: SlotAddrs): MachineConfig {
    return {
      dir,
      vcpu: rec.vcpu,
      memMib: rec.mem_mib,
      kernel: rec.kernel,
      cmdline: rec.cmdline,
      ramPath: join(dir, "ram"),
      diskPath: join(dir, "disk.qcow2"),
      netns: addrs.netns,
      tap: TAP,
      mac: GUEST_MAC,
      accel: rec.accel,
      tbSizeMib: rec.tb_size_mib,
    };
  }

  private getVm(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm || vm.gone) throw new HostdError("not_found", `no running VM for sandbox ${id} on this host`);
    return vm;
  }

  private async withVmLock<T>(vm: Vm, fn: () => Promise<T>): Promise<T> {
    const prev = vm.lock;
    const p = prev.catch(() => undefined).then(fn);
    vm.lock = p.catch(() => undefined);
    return p;
  }

  private async withSnapLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.snapLocks.get(id) ?? Promise.resolve();
    const p = prev.catch(() => undefined).then(fn);
    const tail = p.catch(() => undefined);
    this.snapLocks.set(id, tail);
    void tail.then(() => {
      if (this.snapLocks.get(id) === tail) this.snapLocks.delete(id);
    });
    return p;
  }

  private reserveId(id: string): void {
    if (this.vms.has(id) || this.starting.has(id) || existsSync(this.layout.vmDir(id)))
      throw new HostdError("conflict", `a VM for sandbox ${id} already exists on this host`);
    this.starting.add(id);
  }

  private async resolveImage(name: string) {
    const cat = this.img.catalog();
    if (!cat.some((i) => i.name === name)) {
      throw new HostdError(
        "bad_request",
        `unknown image ${JSON.stringify(name)}; known: ${cat.map((i) => i.name).join(", ")}`,
      );
    }
    return this.img.ensureImage(name);
  }

  private async baseCmdline(): Promise<string> {
    return this.img.kernelCmdline({ hostKhz: this.img.hostKhz() });
  }

  private attachAgentEvents(vm: Vm): void {
    vm.agent.onSelf((action, reason) => {
      const e: HostEvent = { type: "self", sandbox_id: vm.rec.sandbox_id, action };
      if (reason) e.reason = reason;
      this.emit(e);
    });
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

  /** Registers a started VM: agent connected, events wired. */
  private register(rec: VmRecord, dir: string, machine: Machine, agent: AgentLike, addrs: SlotAddrs): Vm {
    const vm: Vm = { rec, dir, machine, agent, addrs, lock: Promise.resolve(), gone: false };
    this.vms.set(rec.sandbox_id, vm);
    this.attachAgentEvents(vm);
    this.watchExit(vm);
    return vm;
  }

  private async cleanupVmFiles(rec: VmRecord, dir: string): Promise<void> {
    await teardownSlot(rec.slot).catch((e) => this.log.warn("network teardown failed", { error: String(e) }));
    this.slots.release(rec.slot);
    await rm(dir, { recursive: true, force: true });
    if (rec.launch_dir && rec.launch_dir !== dir) await rm(rec.launch_dir, { force: true });
    await this.gcLayers();
  }

  /** Deletes frozen layers no VM or snapshot backs onto any more. */
  private async gcLayers(): Promise<void> {
    const used = new Set<string>();
    for (const v of this.vms.values()) for (const l of v.rec.chain) used.add(l);
    for (const name of await readdir(this.layout.vms).catch(() => [] as string[])) {
      const r = await readVmRecord(join(this.layout.vms, name));
      for (const l of r?.chain ?? []) used.add(l);
    }
    for (const name of await readdir(this.layout.snaps).catch(() => [] as string[])) {
      const m = await readSnapMeta(join(this.layout.snaps, name));
      if (!m && !name.endsWith(".tmp")) continue;
      for (const l of m?.chain ?? []) used.add(l);
    }
    for (const name of await readdir(this.layout.layers).catch(() => [] as string[])) {
      const p = join(this.layout.layers, name);
      // A layer being frozen is not in any meta.json yet.
      if (used.has(p) || this.freezing.has(p)) continue;
      await rm(p, { force: true });
    }
  }

  /** Connects the agent and waits for its hello (the readiness probe). */
  private async agentUp(dir: string, timeoutMs: number): Promise<AgentLike> {
    return connectAgent(join(dir, "agent.sock"), timeoutMs);
  }

  /** block_resize to `diskMib` and grow the guest's ext4 to match. */
  private async growDisk(vm: { machine: Machine; agent: AgentLike }, diskMib: number): Promise<void> {
    await vm.machine.resizeDisk(diskMib * MIB);
    await vm.agent.resizeFs("/dev/vda");
  }

  private async currentDiskBytes(path: string): Promise<number> {
    const { stdout } = await qemuImg(["info", "--output=json", "-U", path]);
    return (JSON.parse(stdout) as { "virtual-size": number })["virtual-size"];
  }

  // ---------------------------------------------------------------- create

  /**
   * `opts.cold` boots the image instead of restoring its warm snapshot (benchmarks compare the two; the
   * control plane never sets it).
   */
  async create(spec: VmSpec, opts: { cold?: boolean } = {}): Promise<VmRuntime> {
    validateSpec(spec);
    this.checkCapacity(spec.mem_mib);
    this.reserveId(spec.sandbox_id);
    const t0 = now();
    try {
      const img = await this.resolveImage(spec.image);
      const accel = await this.accel();
      // The disk size is part of the key: a warm snapshot's root fs is already grown to it.
      const key = `${img.hash}-${spec.vcpu}c-${spec.mem_mib}m-${spec.disk_mib}d`;
      const warm = this.layout.warmDir(key);
      if (opts.cold) return await this.coldCreate(spec, img, accel, key, t0);
      if (!existsSync(join(warm, "meta.json"))) {
        // First VM of this shape: boot it cold and capture the warm snapshot from it (one boot, shared by
        // concurrent first creates: only one of them boots cold, the others wait and restore).
        let booted: VmRuntime | undefined;
        await this.warmFlight.do(key, async () => {
          booted = await this.coldCreate(spec, img, accel, key, t0);
          return warm;
        });
        if (booted) return booted;
      }
      const pkey = key;
      this.notePoolKey(pkey, warm, spec);
      const pooled = this.takePooled(pkey);
      if (pooled) {
        try {
          return await this.adoptPooled(pooled, spec, t0);
        } catch (e) {
          this.log.warn("pooled VM unusable, restoring instead", { error: String(e) });
          await this.abortVm(pooled.rec, pooled.dir, pooled.machine, pooled.agent);
        }
      }
      const r = await this.restoreWarm(spec, warm);
      const vm = this.register(r.rec, r.dir, r.machine, r.agent, r.addrs);
      const spawn_ms = Math.round(now() - t0);
      this.log.info("VM created (warm)", { sandbox_id: spec.sandbox_id, spawn_ms, ...r.laps });
      return { sandbox_id: vm.rec.sandbox_id, ip: vm.rec.ip, spawn_ms, boot: "warm" };
    } finally {
      this.starting.delete(spec.sandbox_id);
    }
  }

  /** Work that finishes after the call that started it returned; close() waits for it. */
  private background(fn: () => Promise<void>): void {
    const p = fn()
      .catch((e) => this.log.warn("background cleanup failed", { error: String(e) }))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  // ---------------------------------------------------------------- pool of restored VMs

  private notePoolKey(pkey: string, warm: string, spec: VmSpec): void {
    const target = this.opts.warmPool ?? 1;
    if (target <= 0 || this.closed) return;
    this.vmPoolSpecs.delete(pkey);
    this.vmPoolSpecs.set(pkey, { warm, spec });
    while (this.vmPoolSpecs.size > MAX_POOL_KEYS) {
      const oldest = this.vmPoolSpecs.keys().next().value as string;
      this.vmPoolSpecs.delete(oldest);
      for (const pv of this.vmPool.get(oldest) ?? []) void this.abortVm(pv.rec, pv.dir, pv.machine, pv.agent);
      this.vmPool.delete(oldest);
    }
    this.schedulePoolFill();
  }

  private takePooled(pkey: string): PooledVm | undefined {
    const list = this.vmPool.get(pkey);
    while (list && list.length > 0) {
      const pv = list.shift();
      if (pv && pv.machine.state === "running") return pv;
      if (pv) void this.abortVm(pv.rec, pv.dir, pv.machine, pv.agent);
    }
    return undefined;
  }

  private schedulePoolFill(delayMs = 500): void {
    if (this.vmPoolTimer || this.closed) return;
    this.vmPoolTimer = setTimeout(() => {
      this.vmPoolTimer = undefined;
      for (const [pkey, { warm, spec }] of this.vmPoolSpecs) {
        if (this.vmPoolFilling.has(pkey)) continue;
        const p = this.fillPool(pkey, warm, spec)
          .catch((e) => this.log.warn("warm pool refill failed", { error: String(e) }))
          .finally(() => this.vmPoolFilling.delete(pkey));
        this.vmPoolFilling.set(pkey, p);
      }
    }, delayMs);
    this.vmPoolTimer.unref();
  }

  private async fillPool(pkey: string, warm: string, spec: VmSpec): Promise<void> {
    const target = this.opts.warmPool ?? 1;
    for (;;) {
      const list = this.vmPool.get(pkey) ?? [];
      if (this.closed || !this.vmPoolSpecs.has(pkey) || list.length >= target) return;
      const id = `${POOL_PREFIX}${randomUUID().slice(0, 12)}`;
      const r = await this.restoreWarm({ ...spec, sandbox_id: id, hostname: "pool", envs: {} }, warm);
      // restoreWarm ran configure once; run an exec too, so the guest code a new sandbox runs first is
      // already translated (TCG) rather than translated on the caller's clock.
      await r.agent.exec({ argv: ["true"] });
      if (this.closed || !this.vmPoolSpecs.has(pkey)) {
        await this.abortVm(r.rec, r.dir, r.machine, r.agent);
        return;
      }
      list.push({ rec: r.rec, dir: r.dir, machine: r.machine, agent: r.agent, addrs: r.addrs });
      this.vmPool.set(pkey, list);
    }
  }

  /** Resolves once no pool refill is running (benchmarks wait on it between repetitions). */
  async poolIdle(): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (this.vmPoolTimer) await new Promise((r) => setTimeout(r, 100));
      else if (this.vmPoolFilling.size > 0) await Promise.all(this.vmPoolFilling.values());
      else return;
    }
  }

  /** A pooled VM becomes the sandbox: its dir is renamed into place (QEMU keeps its open files and sockets). */
  private async adoptPooled(pv: PooledVm, spec: VmSpec, t0: number): Promise<VmRuntime> {
    const dir = this.layout.vmDir(spec.sandbox_id);
    const rec: VmRecord = {
      ...pv.rec,
      sandbox_id: spec.sandbox_id,
      hostname: spec.hostname,
      created_at: new Date().toISOString(),
      launch_dir: pv.rec.launch_dir ?? pv.dir,
    };
    pv.agent.close();
    await rename(pv.dir, dir);
    // QEMU reopens its disk by the path it was started with (e.g. read-only when a snapshot inactivates
    // it): the old path must keep resolving.
    await symlink(dir, pv.dir);
    pv.dir = dir;
    pv.rec = rec;
    await writeVmRecord(dir, rec);
    const agent = await this.agentUp(dir, 10_000);
    pv.agent = agent;
    await agent.configure({
      hostname: spec.hostname,
      envs: spec.envs,
      time_ns: timeNs(),
      entropy: entropy(),
    });
    const vm = this.register(rec, dir, pv.machine, agent, pv.addrs);
    this.schedulePoolFill();
    const spawn_ms = Math.round(now() - t0);
    this.log.info("VM created (warm, pooled)", { sandbox_id: spec.sandbox_id, spawn_ms });
    return { sandbox_id: spec.sandbox_id, ip: vm.rec.ip, spawn_ms, boot: "warm" };
  }

  private async prepareVm(
    spec: VmSpec,
    base: Omit<VmRecord, "sandbox_id" | "hostname" | "slot" | "ip" | "disk_mib" | "created_at">,
  ): Promise<{ rec: VmRecord; dir: string; addrs: SlotAddrs }> {
    const dir = this.layout.vmDir(spec.sandbox_id);
    const addrs = await this.pool.acquire();
    const rec: VmRecord = {
      ...base,
      sandbox_id: spec.sandbox_id,
      hostname: spec.hostname,
      slot: addrs.slot,
      ip: addrs.sandboxIp,
      disk_mib: spec.disk_mib,
      created_at: new Date().toISOString(),
    };
    try {
      await mkdir(dir, { recursive: true });
      await writeVmRecord(dir, rec);
    } catch (e) {
      await teardownSlot(addrs.slot).catch(() => undefined);
      this.slots.release(addrs.slot);
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return { rec, dir, addrs };
  }

  private async abortVm(
    rec: VmRecord,
    dir: string,
    machine?: Machine,
    agent?: AgentLike,
    err?: unknown,
  ): Promise<void> {
    agent?.close();
    // The guest console is the only record of why a boot or restore failed: keep its tail in the error.
    if (err instanceof Error) {
      const con = await readFile(join(dir, "console.log"), "utf8").catch(() => "");
      if (con) err.message += `\n--- guest console (last lines) ---\n${con.slice(-1500)}`;
    }
    await machine?.stop(500).catch(() => undefined);
    await this.cleanupVmFiles(rec, dir).catch(() => undefined);
  }

  private async coldCreate(
    spec: VmSpec,
    img: { name: string; kernel: string; rootfs: string; hash: string },
    accel: Accel,
    key: string,
    t0: number,
  ): Promise<VmRuntime> {
    const cmdline = await this.baseCmdline();
    const imgBytes = (await stat(img.rootfs)).size;
    const { rec, dir, addrs } = await this.prepareVm(spec, {
      image: spec.image,
      image_hash: img.hash,
      vcpu: spec.vcpu,
      mem_mib: spec.mem_mib,
      kernel: img.kernel,
      cmdline,
      accel,
      tb_size_mib: this.opts.tbSizeMib ?? 32,
      chain: [],
    });
    let machine: Machine | undefined;
    let agent: AgentLike | undefined;
    try {
      await qemuImg([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        img.rootfs,
        join(dir, "disk.qcow2"),
        String(imgBytes),
      ]);
      machine = this.driver.configure(this.machineConfig(rec, dir, addrs));
      await machine.start();
      agent = await this.agentUp(dir, 120_000);
      // Grown before the warm capture: VMs restored from it then start with a root fs of disk_mib
      // (growing ext4 online costs 150–300 ms of cold guest code under TCG on every create otherwise).
      if (spec.disk_mib * MIB > imgBytes) await this.growDisk({ machine, agent }, spec.disk_mib);
      const diskBytes = Math.max(imgBytes, spec.disk_mib * MIB);
      await this.captureWarm(machine, agent, dir, key, { img, spec, cmdline, accel, diskBytes });
      await agent.configure({
        hostname: spec.hostname,
        envs: spec.envs,
        time_ns: timeNs(),
        entropy: entropy(),
      });
      this.register(rec, dir, machine, agent, addrs);
      const spawn_ms = Math.round(now() - t0);
      this.log.info("VM created (cold boot)", { sandbox_id: spec.sandbox_id, spawn_ms });
      return { sandbox_id: spec.sandbox_id, ip: rec.ip, spawn_ms, boot: "cold" };
    } catch (e) {
      await this.abortVm(rec, dir, machine, agent, e);
      throw e;
    }
  }

  /**
   * Snapshot this freshly booted VM as the image's warm snapshot, then let it run on. The VM keeps writing
   * its own disk.qcow2; the warm snapshot gets a copy taken while the VM is stopped, which is frozen from
   * then on (every warm-created VM gets its own overlay on it).
   */
  private async captureWarm(
    machine: Machine,
    agent: AgentLike,
    dir: string,
    key: string,
    o: {
      img: { name: string; hash: string; kernel: string };
      spec: VmSpec;
      cmdline: string;
      accel: Accel;
      diskBytes: number;
    },
  ): Promise<void> {
    const warm = this.layout.warmDir(key);
    if (existsSync(join(warm, "meta.json"))) return;
    const tmp = `${warm}.tmp-${process.pid}-${randomUUID().slice(0, 8)}`;
    await mkdir(tmp, { recursive: true });
    try {
      await agent.quiesce();
      await machine.pause();
      await machine.snapshot(join(tmp, "state"));
      await Promise.all([
        cpSparse(join(dir, "ram"), join(tmp, "ram")),
        cpSparse(join(dir, "disk.qcow2"), join(tmp, "disk.qcow2")),
      ]);
      const meta: WarmMeta = {
        key,
        image: o.img.name,
        image_hash: o.img.hash,
        vcpu: o.spec.vcpu,
        mem_mib: o.spec.mem_mib,
        disk_bytes: o.diskBytes,
        kernel: o.img.kernel,
        cmdline: o.cmdline,
        accel: o.accel,
        created_at: new Date().toISOString(),
      };
      await writeWarmMeta(tmp, meta);
      // meta.json is fsynced by its atomic write.
      for (const f of ["ram", "state", "disk.qcow2"]) await fsyncPath(join(tmp, f));
      // Another daemon on this host may have captured the same snapshot meanwhile: theirs is as good.
      await rename(tmp, warm).catch(async (e) => {
        if (!existsSync(join(warm, "meta.json"))) throw e;
        await rm(tmp, { recursive: true, force: true });
      });
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    } finally {
      if (machine.state === "paused") await machine.resume();
    }
    // quiesce stops the agent sending until the next hello.
    await agent.hello();
  }

  /**
   * A new empty overlay on the warm disk: a copy of a template made once per warm snapshot (an empty
   * qcow2 is ~200 KB of header naming its backing file), which saves a qemu-img process per create.
   */
  private async warmOverlay(warm: string, dest: string): Promise<void> {
    const tpl = join(warm, "overlay.qcow2");
    if (!existsSync(tpl)) {
      const tmp = `${tpl}.${process.pid}.${randomUUID().slice(0, 8)}`;
      await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(warm, "disk.qcow2"), tmp]);
      await rename(tmp, tpl);
    }
    await copyFile(tpl, dest);
  }

  private async restoreWarm(
    spec: VmSpec,
    warm: string,
  ): Promise<{
    rec: VmRecord;
    dir: string;
    machine: Machine;
    agent: AgentLike;
    addrs: SlotAddrs;
    laps: Record<string, number>;
  }> {
    const w = await readWarmMeta(warm);
    if (!w) throw new HostdError("internal", `warm snapshot ${warm} is unreadable; delete it to rebuild`);
    const { rec, dir, addrs } = await this.prepareVm(spec, {
      image: spec.image,
      image_hash: w.image_hash,
      vcpu: w.vcpu,
      mem_mib: w.mem_mib,
      kernel: w.kernel,
      cmdline: w.cmdline,
      accel: w.accel,
      tb_size_mib: this.opts.tbSizeMib ?? 32,
      chain: [join(warm, "disk.qcow2")],
    });
    let machine: Machine | undefined;
    let agent: AgentLike | undefined;
    const sw = stopwatch();
    try {
      await Promise.all([
        cpSparse(join(warm, "ram"), join(dir, "ram")),
        this.warmOverlay(warm, join(dir, "disk.qcow2")),
      ]);
      sw.lap("copy");
      machine = this.driver.configure(this.machineConfig(rec, dir, addrs));
      await machine.restore(join(warm, "state"));
      sw.lap("restore");
      await machine.resume();
      agent = await this.agentUp(dir, 30_000);
      sw.lap("agent");
      await agent.configure({
        hostname: spec.hostname,
        envs: spec.envs,
        time_ns: timeNs(),
        entropy: entropy(),
      });
      sw.lap("configure");
      if (spec.disk_mib * MIB > w.disk_bytes) await this.growDisk({ machine, agent }, spec.disk_mib);
      sw.lap("grow");
      return { rec, dir, machine, agent, addrs, laps: sw.laps };
    } catch (e) {
      await this.abortVm(rec, dir, machine, agent, e);
      throw e;
    }
  }

  // ---------------------------------------------------------------- pause

  async pause(sandboxId: string): Promise<SnapshotRef> {
    const vm = this.getVm(sandboxId);
    return this.withVmLock(vm, async () => {
      if (vm.gone) throw new HostdError("not_found", `sandbox ${sandboxId} is not running on this host`);
      const t0 = now();
      const snapId = `snap-${randomUUID()}`;
      const sdir = this.layout.snapDir(snapId);
      await mkdir(sdir, { recursive: true });
      const ram = join(vm.dir, "ram");
      const sw = stopwatch();
      try {
        // Most of a pause is flushing the RAM file's dirty pages: start while the agent quiesces (what the
        // guest dirties meanwhile is caught by the second flush, after the vCPUs stopped).
        const early = fsyncPath(ram).catch(() => undefined);
        await vm.agent.quiesce();
        sw.lap("quiesce");
        await vm.machine.pause();
        // RAM no longer changes once the vCPUs stop: flush it while QEMU writes the device state.
        const ramSync = early.then(() => fsyncPath(ram));
        await vm.machine.snapshot(join(sdir, "state"));
        sw.lap("state");
        await Promise.all([ramSync, fsyncPath(join(sdir, "state")), fsyncPath(join(vm.dir, "disk.qcow2"))]);
        sw.lap("fsync");
      } catch (e) {
        await rm(sdir, { recursive: true, force: true });
        if (vm.machine.state === "paused") {
          await vm.machine.resume().catch(() => undefined);
          await vm.agent.hello().catch(() => undefined);
        }
        throw e;
      }
      vm.gone = true;
      this.vms.delete(sandboxId);
      vm.agent.close();
      // After the state transfer QEMU writes nothing more (its disk is inactive, RAM is a mapping of the
      // file just flushed), so the files can move while it exits.
      const exited = vm.machine.stop(1000);
      await rename(ram, join(sdir, "ram"));
      await rename(join(vm.dir, "disk.qcow2"), join(sdir, "disk.qcow2"));
      const pause_ms = Math.round(now() - t0);
      const meta: SnapMeta = {
        snapshot_id: snapId,
        sandbox_id: sandboxId,
        hostname: vm.rec.hostname,
        image: vm.rec.image,
        image_hash: vm.rec.image_hash,
        vcpu: vm.rec.vcpu,
        mem_mib: vm.rec.mem_mib,
        disk_mib: vm.rec.disk_mib,
        kernel: vm.rec.kernel,
        cmdline: vm.rec.cmdline,
        accel: vm.rec.accel,
        tb_size_mib: vm.rec.tb_size_mib,
        chain: vm.rec.chain,
        pause_ms,
        created_at: new Date().toISOString(),
      };
      await writeSnapMeta(sdir, meta);
      const ref = await snapRef(this.layout, meta);
      // The snapshot is durable; what is left (QEMU's exit, the namespace, the VM dir) finishes in the
      // background. The dir is moved aside first so the same sandbox can be resumed at once; the slot
      // stays reserved until its namespace is gone.
      const trash = join(this.layout.vms, `${TRASH_PREFIX}${randomUUID().slice(0, 12)}`);
      await rename(vm.dir, trash);
      if (vm.rec.launch_dir && vm.rec.launch_dir !== vm.dir) await rm(vm.rec.launch_dir, { force: true });
      sw.lap("move");
      this.background(async () => {
        await exited;
        await teardownSlot(vm.rec.slot).catch((e) =>
          this.log.warn("network teardown failed", { error: String(e) }),
        );
        this.slots.release(vm.rec.slot);
        await rm(trash, { recursive: true, force: true });
      });
      this.log.info("VM paused", { sandbox_id: sandboxId, snapshot_id: snapId, pause_ms, ...sw.laps });
      return ref;
    });
  }

  // ---------------------------------------------------------------- resume

  async resume(snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
    validateSpec(spec);
    this.checkCapacity(snapshot.mem_mib);
    this.reserveId(spec.sandbox_id);
    const t0 = now();
    try {
      return await this.withSnapLock(snapshot.snapshot_id, async () => {
        const meta = await snapMeta(this.layout, snapshot);
        if (spec.disk_mib < meta.disk_mib) throw new HostdError("bad_request", "disk_mib cannot shrink");
        const sdir = this.layout.snapDir(meta.snapshot_id);
        const { rec, dir, addrs } = await this.prepareVm(spec, {
          image: meta.image,
          image_hash: meta.image_hash,
          vcpu: meta.vcpu,
          mem_mib: meta.mem_mib,
          kernel: meta.kernel,
          cmdline: meta.cmdline,
          accel: meta.accel,
          tb_size_mib: meta.tb_size_mib,
          chain: meta.chain,
        });
        let machine: Machine | undefined;
        let agent: AgentLike | undefined;
        // The snapshot is consumed: its RAM file and top disk layer become the VM's (renames, no copies).
        await rename(join(sdir, "ram"), join(dir, "ram"));
        await rename(join(sdir, "disk.qcow2"), join(dir, "disk.qcow2"));
        try {
          machine = this.driver.configure(this.machineConfig(rec, dir, addrs));
          await machine.restore(join(sdir, "state"));
          await machine.resume();
          agent = await this.agentUp(dir, 30_000);
          if (meta.needs_configure)
            await agent.configure({
              hostname: spec.hostname,
              envs: spec.envs,
              time_ns: timeNs(),
              entropy: entropy(),
            });
          // Same sandbox, same identity: only the clock and the RNG moved on while it was paused.
          else await agent.sync({ time_ns: timeNs(), entropy: entropy() });
          if (spec.disk_mib > meta.disk_mib) await this.growDisk({ machine, agent }, spec.disk_mib);
        } catch (e) {
          // Give the snapshot its files back so it can be resumed again.
          agent?.close();
          await machine?.stop(500).catch(() => undefined);
          await rename(join(dir, "ram"), join(sdir, "ram")).catch(() => undefined);
          await rename(join(dir, "disk.qcow2"), join(sdir, "disk.qcow2")).catch(() => undefined);
          await this.cleanupVmFiles(rec, dir).catch(() => undefined);
          throw e;
        }
        this.register(rec, dir, machine, agent, addrs);
        await rm(sdir, { recursive: true, force: true });
        const spawn_ms = Math.round(now() - t0);
        this.log.info("VM resumed", { sandbox_id: spec.sandbox_id, spawn_ms });
        return { sandbox_id: spec.sandbox_id, ip: rec.ip, spawn_ms, boot: "resume" as const };
      });
    } finally {
      this.starting.delete(spec.sandbox_id);
    }
  }

  // ---------------------------------------------------------------- fork

  /** Makes the parent's top layer immutable (once) and returns the frozen layer children back onto. */
  private async freezeParent(meta: SnapMeta): Promise<{ base: string; chain: string[] }> {
    const sdir = this.layout.snapDir(meta.snapshot_id);
    const top = join(sdir, "disk.qcow2");
    if (meta.frozen && meta.chain[0]) return { base: meta.chain[0], chain: meta.chain };
    const layer = join(this.layout.layers, `${randomUUID()}.qcow2`);
    this.freezing.add(layer);
    try {
      return await this.freezeInto(meta, sdir, top, layer);
    } finally {
      this.freezing.delete(layer);
    }
  }

  private async freezeInto(
    meta: SnapMeta,
    sdir: string,
    top: string,
    layer: string,
  ): Promise<{ base: string; chain: string[] }> {
    await rename(top, layer);
    try {
      await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer, top]);
    } catch (e) {
      await rename(layer, top);
      throw e;
    }
    const chain = [layer, ...meta.chain];
    const next: SnapMeta = { ...meta, chain, frozen: true };
    await writeSnapMeta(sdir, next);
    Object.assign(meta, next);
    return { base: layer, chain };
  }

  async fork(
    parent: SnapshotRef,
    child: VmSpec,
    opts: { start_paused?: boolean } = {},
  ): Promise<{ runtime?: VmRuntime; snapshot?: SnapshotRef }> {
    validateSpec(child);
    const t0 = now();
    const meta0 = await snapMeta(this.layout, parent);
    if (child.disk_mib < meta0.disk_mib)
      throw new HostdError("bad_request", "a fork's disk_mib cannot be smaller than its parent's");
    const psdir = this.layout.snapDir(meta0.snapshot_id);
    /**
     * Under the parent's lock (a resume of the parent consumes its files): freeze its disk, copy its RAM
     * file, device state and top layer into `dest`. Once frozen, the parent's top layer is an empty
     * overlay on the frozen layer, so a copy of it is the child's overlay, without a qemu-img run.
     */
    const copyParent = (dest: string) =>
      this.withSnapLock(parent.snapshot_id, async () => {
        const m = await snapMeta(this.layout, parent);
        const f = await this.freezeParent(m);
        await Promise.all([
          cpSparse(join(psdir, "ram"), join(dest, "ram")),
          copyFile(join(psdir, "state"), join(dest, "state")),
          copyFile(join(psdir, "disk.qcow2"), join(dest, "disk.qcow2")),
        ]);
        return { meta: m, ...f };
      });

    if (opts.start_paused) {
      const snapId = `snap-${randomUUID()}`;
      const sdir = this.layout.snapDir(snapId);
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
        return { snapshot: await snapRef(this.layout, m) };
      } catch (e) {
        await rm(sdir, { recursive: true, force: true });
        throw e;
      }
    }

    this.checkCapacity(meta0.mem_mib);
    this.reserveId(child.sandbox_id);
    try {
      const { rec, dir, addrs } = await this.prepareVm(child, {
        image: meta0.image,
        image_hash: meta0.image_hash,
        vcpu: meta0.vcpu,
        mem_mib: meta0.mem_mib,
        kernel: meta0.kernel,
        cmdline: meta0.cmdline,
        accel: meta0.accel,
        tb_size_mib: meta0.tb_size_mib,
        chain: meta0.chain,
      });
      let machine: Machine | undefined;
      let agent: AgentLike | undefined;
      const sw = stopwatch();
      try {
        const { meta, chain } = await copyParent(dir);
        rec.chain = chain;
        await writeVmRecord(dir, rec);
        sw.lap("copy");
        machine = this.driver.configure(this.machineConfig(rec, dir, addrs));
        await machine.restore(join(dir, "state"));
        sw.lap("restore");
        await machine.resume();
        agent = await this.agentUp(dir, 30_000);
        sw.lap("agent");
        await agent.configure({
          hostname: child.hostname,
          envs: child.envs,
          time_ns: timeNs(),
          entropy: entropy(),
        });
        sw.lap("configure");
        if (child.disk_mib > meta.disk_mib) await this.growDisk({ machine, agent }, child.disk_mib);
      } catch (e) {
        await this.abortVm(rec, dir, machine, agent, e);
        throw e;
      }
      this.register(rec, dir, machine, agent, addrs);
      const spawn_ms = Math.round(now() - t0);
      this.log.info("VM forked", {
        sandbox_id: child.sandbox_id,
        parent: meta0.snapshot_id,
        spawn_ms,
        ...sw.laps,
      });
      return { runtime: { sandbox_id: child.sandbox_id, ip: rec.ip, spawn_ms, boot: "fork" } };
    } finally {
      this.starting.delete(child.sandbox_id);
    }
  }

  // ---------------------------------------------------------------- destroy & co

  async destroy(sandboxId: string): Promise<void> {
    if (!SANDBOX_ID_RE.test(sandboxId)) return;
    const vm = this.vms.get(sandboxId);
    if (vm) {
      await this.withVmLock(vm, async () => {
        vm.gone = true;
        if (this.vms.get(sandboxId) === vm) this.vms.delete(sandboxId);
        vm.agent.close();
        await vm.machine.stop(1000);
        await this.cleanupVmFiles(vm.rec, vm.dir);
      });
      return;
    }
    // A record without a live entry: a VM a crash left behind, or one whose QEMU died.
    const dir = this.layout.vmDir(sandboxId);
    if (!existsSync(dir)) return;
    const rec = await readVmRecord(dir);
    await this.killStale(dir, rec?.launch_dir);
    if (rec) await this.cleanupVmFiles(rec, dir);
    else await rm(dir, { recursive: true, force: true });
  }

  private async killStale(dir: string, launchDir = dir): Promise<void> {
    const pid = Number((await readFile(join(dir, "qemu.pid"), "utf8").catch(() => "")).trim());
    if (pid > 0 && isOurQemu(pid, launchDir)) {
      process.kill(pid, "SIGKILL");
      for (let i = 0; i < 400 && isOurQemu(pid, launchDir); i++) await new Promise((r) => setTimeout(r, 5));
    }
  }

  async deleteSnapshot(snapshot: SnapshotRef): Promise<void> {
    if (!SNAPSHOT_ID_RE.test(snapshot.snapshot_id)) return;
    await this.withSnapLock(snapshot.snapshot_id, async () => {
      await rm(this.layout.snapDir(snapshot.snapshot_id), { recursive: true, force: true });
    });
    await this.gcLayers();
  }

  async resizeDisk(sandboxId: string, diskMib: number): Promise<void> {
    const vm = this.getVm(sandboxId);
    await this.withVmLock(vm, async () => {
      if (!Number.isInteger(diskMib) || diskMib <= vm.rec.disk_mib)
        throw new HostdError("bad_request", `disk can only grow (now ${vm.rec.disk_mib} MiB)`);
      await this.growDisk(vm, diskMib);
      vm.rec.disk_mib = diskMib;
      await writeVmRecord(vm.dir, vm.rec);
    });
  }

  async list(): Promise<{ sandbox_id: string; ip: string; pid: number }[]> {
    return [...this.vms.values()]
      .filter((v) => !v.gone)
      .map((v) => ({ sandbox_id: v.rec.sandbox_id, ip: v.rec.ip, pid: v.machine.pid ?? 0 }));
  }

  // ---------------------------------------------------------------- guest I/O

  private activity(id: string): void {
    this.emit({ type: "activity", sandbox_id: id });
  }

  async exec(
    sandboxId: string,
    req: ExecRequest,
    events?: ExecEvents,
    signal?: AbortSignal,
  ): Promise<ExecResult> {
    const vm = this.getVm(sandboxId);
    this.activity(sandboxId);
    try {
      return await vm.agent.exec(req, events, signal);
    } finally {
      this.activity(sandboxId);
    }
  }

  async openPty(sandboxId: string, req: PtyRequest): Promise<PtySession> {
    const vm = this.getVm(sandboxId);
    this.activity(sandboxId);
    return vm.agent.openPty(req);
  }

  async readFile(sandboxId: string, path: string): Promise<{ stat: FileStat; body: Readable }> {
    const vm = this.getVm(sandboxId);
    this.activity(sandboxId);
    return vm.agent.readFile(path);
  }

  async writeFile(
    sandboxId: string,
    path: string,
    body: Readable,
    mode?: number,
  ): Promise<{ bytes: number }> {
    const vm = this.getVm(sandboxId);
    this.activity(sandboxId);
    try {
      return await vm.agent.writeFile(path, body, mode);
    } finally {
      this.activity(sandboxId);
    }
  }

  async connectTcp(sandboxId: string, port: number): Promise<Duplex> {
    const vm = this.getVm(sandboxId);
    this.activity(sandboxId);
    return vm.agent.connectTcp(port);
  }

  /** The QEMU process of a running VM (tests, benchmarks). */
  pidOf(sandboxId: string): number | undefined {
    return this.vms.get(sandboxId)?.machine.pid;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.pending);
    if (this.vmPoolTimer) clearTimeout(this.vmPoolTimer);
    await Promise.all(this.vmPoolFilling.values());
    // Pooled VMs are no sandbox's: nothing would re-adopt them.
    for (const list of this.vmPool.values())
      for (const pv of list) await this.abortVm(pv.rec, pv.dir, pv.machine, pv.agent);
    this.vmPool.clear();
    await this.pool.close();
    for (const vm of this.vms.values()) vm.agent.close();
    // Dropping QMP connections leaves QEMU running; the next daemon re-adopts it.
    for (const vm of this.vms.values()) vm.machine.detach();
    this.vms.clear();
  }

  // ---------------------------------------------------------------- re-adoption

  private async readopt(): Promise<void> {
    // Half-written snapshots and warm captures from a crash.
    for (const name of await readdir(this.layout.snaps)) {
      if (!existsSync(join(this.layout.snaps, name, "meta.json")))
        await rm(join(this.layout.snaps, name), { recursive: true, force: true });
    }
    for (const name of await readdir(this.layout.vms)) {
      const dir = join(this.layout.vms, name);
      if (name.startsWith(TRASH_PREFIX)) {
        const rec = await readVmRecord(dir);
        if (rec) {
          await this.killStale(dir, rec.launch_dir ?? this.layout.vmDir(rec.sandbox_id));
          await teardownSlot(rec.slot).catch(() => undefined);
        }
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      const st = await lstat(dir).catch(() => undefined);
      if (st?.isSymbolicLink()) {
        // The launch path of a pooled VM that became a sandbox: kept while that VM exists.
        if (!existsSync(dir)) await rm(dir, { force: true });
        continue;
      }
      const rec = await readVmRecord(dir);
      if (!rec) {
        await this.killStale(dir);
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      this.slots.claim(rec.slot);
      const pid = Number((await readFile(join(dir, "qemu.pid"), "utf8").catch(() => "")).trim());
      const addrs = slotAddrs(rec.slot);
      let machine: Machine | undefined;
      let agent: AgentLike | undefined;
      try {
        if (pid > 0 && !name.startsWith(POOL_PREFIX))
          machine = await this.driver.adopt(this.machineConfig(rec, dir, addrs), pid, rec.launch_dir);
        if (machine) {
          if (machine.state === "paused") {
            // A daemon died mid-pause: the guest is intact, let it run again.
            await machine.resume();
          }
          agent = await this.agentUp(dir, 10_000);
        }
      } catch (e) {
        this.log.warn("cannot re-adopt VM", { sandbox_id: rec.sandbox_id, error: String(e) });
        agent?.close();
        await machine?.stop(200).catch(() => undefined);
        machine = undefined;
      }
      if (machine && agent) {
        this.register(rec, dir, machine, agent, addrs);
        this.log.info("re-adopted VM", { sandbox_id: rec.sandbox_id, pid });
      } else if (name.startsWith(POOL_PREFIX)) {
        await this.killStale(dir, rec.launch_dir);
        await this.cleanupVmFiles(rec, dir);
      } else {
        await this.killStale(dir, rec.launch_dir);
        await this.cleanupVmFiles(rec, dir);
        this.emit({
          type: "vm_exited",
          sandbox_id: rec.sandbox_id,
          reason: "the VM was not running when the host daemon started",
        });
      }
    }
  }
}
