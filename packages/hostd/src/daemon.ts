import { mkdir } from "node:fs/promises";
/**
 * `LocalHostDaemon`: the VM lifecycle on one host, behind the `HostDaemon` interface. This is the façade:
 * it opens and closes the host, answers info and images, and hands every other call to its module —
 * create.ts, snapshot/ (pause, resume, fork, layers), destroy.ts, readopt.ts, guestio.ts — all of which
 * start VMs through bringup.ts and keep their records through records.ts. See docs/ARCHITECTURE.md.
 */
import { cpus, totalmem } from "node:os";
import type { Duplex, Readable } from "node:stream";
import type {
  Accel,
  DiskMount,
  ExecEvents,
  ExecRequest,
  ExecResult,
  FileStat,
  HostDaemon,
  HostEvent,
  HostInfo,
  ImageInfo,
  NetUsage,
  OverlayEndpoint,
  OverlayMembership,
  Progress,
  PtyRequest,
  PtySession,
  SnapshotRef,
  VmRuntime,
  VmSpec,
} from "@createos-sandbox/protocol";
import { HostdError } from "@createos-sandbox/protocol";
import { capCaches, sweepLeftovers } from "./cachecap.js";
import { create } from "./create.js";
import { deleteSnapshot, destroy, listSnapshots, resizeDisk } from "./destroy.js";
import { HostDisks } from "./disks/mounts.js";
import { setBandwidth, setEgress, startNameProxy, takeNetUsage } from "./egress.js";
import { GuestIo } from "./guestio.js";
import { Host } from "./host.js";
import * as images from "./images/index.js";
import { commitImage, committedImage, deleteImage } from "./images/template.js";
import { hostPrivateEgress } from "./net/egresscheck.js";
import { firewallConfig } from "./net/index.js";
import { overlayOf, setNetworks } from "./overlay.js";
import { readopt } from "./readopt.js";
import { Layout } from "./records.js";
import { type ForkOpts, fork } from "./snapshot/fork.js";
import { pause } from "./snapshot/pause.js";
import { resume } from "./snapshot/resume.js";
import { type SnapshotFsMode, closeStore, openStore, snapshotFsMode } from "./snapshot/store.js";
import { ensurePrivateDir } from "./sys/fs.js";
import type { VmmDriver } from "./vmm/driver.js";
import { QemuDriver } from "./vmm/qemu.js";
import { gcWarmRam } from "./warm/storeram.js";

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
  /** The VMM the VMs run under (default: QEMU). */
  driver?: VmmDriver;
  /**
   * Restored VMs kept running per recently used (image, shape, disk), so a create only renames one
   * into place and configures it (default 1; 0 disables). Under TCG a fresh restore spends most of its
   * time re-translating guest code; a pooled VM has already done that.
   */
  warmPool?: number;
  /** Network namespaces kept ready for new VMs (default 2; 0 disables the pool). */
  netPool?: number;
  /**
   * This host's name in the control plane (`HostInfo.id`, the sandboxes' `host_id`): stable across
   * restarts, unique among the hosts of one control plane. Default "local", the embedded daemon's.
   */
  hostId?: string;
  /**
   * CIDRs in private or reserved ranges that guests may reach anyway (a LAN S3 server, the proxy the
   * package registries sit behind); default `$CREATEOS_SANDBOX_PRIVATE_EGRESS` (comma-separated), else
   * none. Either way the addresses of the host's own package sources that lie in those ranges are added
   * unless `$CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO` is `0`. Other sandboxes and the host's own addresses stay
   * unreachable whatever is listed.
   */
  privateEgress?: string[];
  /**
   * MiB of free disk (data dir and image cache) below which create, pause and fork are refused as
   * `capacity`; default `$CREATEOS_SANDBOX_MIN_FREE_DISK_MIB`, else 2048.
   */
  minFreeDiskMib?: number;
  /**
   * Size cap of the warm-snapshot cache, MiB: least recently used entries no VM or snapshot backs onto
   * are evicted past it; default `$CREATEOS_SANDBOX_WARM_CACHE_MIB`, else 8192.
   */
  warmCacheMib?: number;
  /**
   * Size cap of the image-layer cache (`<cache>/rootfs`), MiB: least recently used rootfs files and
   * trees no disk backs onto are evicted past it; default `$CREATEOS_SANDBOX_IMAGE_CACHE_MIB`, else 16384.
   */
  imageCacheMib?: number;
  /**
   * How a fork gets its parent's RAM: `copy` (default; a RAM file of its own: a reflink clone where the
   * snapshot store has reflinks, no data copied, else a sparse copy) or `map` (a private copy-on-write
   * mapping of a frozen RAM layer, no copy even on a plain store). `map` is opt-in because, on QEMU 7.2,
   * the layer must be writable by every fork that maps it (no `rom=off`), so a QEMU escape in one fork
   * could change its siblings' unwritten pages, and a fork's first pause must write all of its RAM into
   * the state (0.9–1.0 s) and its resume read it back (1.8–3.6 s). Default `$CREATEOS_SANDBOX_FORK_RAM`.
   */
  forkRam?: "copy" | "map";
  /**
   * This host's VXLAN endpoint for private networks that span hosts (`HostInfo.overlay_endpoint`); default
   * `$CREATEOS_SANDBOX_OVERLAY_ADDR` (else 127.0.0.1) and `$CREATEOS_SANDBOX_OVERLAY_PORT` (else 4789).
   */
  overlay?: OverlayEndpoint;
  /**
   * The snapshot store (snapshot/store.ts): `auto` (a loop-mounted XFS image with reflinks when the data
   * dir's filesystem has none), `xfs-image` (that, or fail) or `plain`. Default `$CREATEOS_SANDBOX_SNAPSHOT_FS`.
   */
  snapshotFs?: SnapshotFsMode;
}

/**
 * The private-egress list of this daemon's sandboxes: the explicit one (`opts.privateEgress`, else
 * `$CREATEOS_SANDBOX_PRIVATE_EGRESS`) plus the addresses the host's own package sources resolve to when the
 * firewall would refuse them (net/egresscheck.ts), so that guests reach what the host reaches.
 */
async function guestPrivateEgress(opts: OpenOptions, log: Logger): Promise<string[]> {
  const explicit = firewallConfig(opts.privateEgress).privateEgress;
  try {
    const { privateEgress, added } = await hostPrivateEgress(explicit);
    if (added.length > 0) log.info("guest egress: allowing the host's package sources", { addresses: added });
    return privateEgress;
  } catch (e) {
    log.warn("guest egress: the host's package sources were not resolved", { error: String(e) });
    return explicit;
  }
}

export class LocalHostDaemon implements HostDaemon {
  readonly hostId: string;
  private readonly io: GuestIo;
  private readonly disks: HostDisks;

  private constructor(private readonly host: Host) {
    this.io = new GuestIo(host);
    this.disks = new HostDisks(host, this.io);
    this.hostId = host.opts.hostId ?? "local";
  }

  static async open(opts: OpenOptions): Promise<LocalHostDaemon> {
    const layout = new Layout(opts.dataDir, opts.cacheDir ?? images.cacheDir());
    const base: ImagesApi = {
      catalog: images.catalog,
      builtImage: images.builtImage,
      ensureImage: images.ensureImage,
      ensureKernel: images.ensureKernel,
      kernelCmdline: images.kernelCmdline,
      hostKhz: () => images.hostKhz(),
      ...opts.images,
    };
    // Committed images (templates) resolve like built-ins; they are not in the catalog `images()` lists.
    const img: ImagesApi = {
      ...base,
      builtImage: (n) => committedImage(layout.root, n) ?? base.builtImage(n),
      ensureImage: async (n, p) => committedImage(layout.root, n) ?? base.ensureImage(n, p),
    };
    const log = opts.log ?? nullLog;
    const privateEgress = await guestPrivateEgress(opts, log);
    const host = new Host({ ...opts, privateEgress }, layout, log, img, opts.driver ?? new QemuDriver());
    // A bad overlay setting fails the open, not the first sandbox on a network.
    overlayOf(host);
    await ensurePrivateDir(opts.dataDir);
    // Mounted (if it is an image) before anything below hostd/ is read or made.
    host.store = await openStore(layout, snapshotFsMode(opts.snapshotFs), log);
    log.info("snapshot store", { ...host.store });
    await gcWarmRam(layout);
    await ensurePrivateDir(layout.root);
    await sweepLeftovers(layout);
    for (const p of [layout.vms, layout.snaps, layout.layers]) await mkdir(p, { recursive: true });
    await mkdir(layout.ramLayers, { recursive: true, mode: 0o700 });
    // Before re-adoption: the re-adopted VMs' allowlists redirect to its ports.
    await startNameProxy(host);
    await readopt(host);
    capCaches(host);
    host.capConsoles(true);
    await host.netPool.init((slot) => [...host.vms.values()].some((v) => v.rec.slot === slot));
    return new LocalHostDaemon(host);
  }

  async info(): Promise<HostInfo> {
    const { img } = this.host;
    const built: string[] = [];
    for (const i of img.catalog()) if (img.builtImage(i.name)) built.push(i.name);
    let accel: Accel = "tcg";
    let notReady: string | undefined;
    if (built.length > 0 || this.host.opts.accel) {
      try {
        accel = await this.host.accel();
      } catch (e) {
        notReady = `accelerator probe failed: ${(e as Error).message}`;
      }
    } else notReady = "no image is built yet (kernel ~6 min and rootfs builds run on first use)";
    const info: HostInfo = {
      id: this.hostId,
      status: this.host.closed ? "dead" : "active",
      accel,
      free_mib: this.host.freeMib(),
      mem_total_mib: Math.floor(totalmem() / 1048576),
      vcpus: cpus().length,
      promised_mib: this.host.promisedMib(),
      vm_count: this.host.vms.size,
      rootfses: built,
      overlay_endpoint: overlayOf(this.host).endpoint,
    };
    if (notReady) info.not_ready_reason = notReady;
    return info;
  }

  async images(): Promise<ImageInfo[]> {
    const { img } = this.host;
    return img.catalog().map((c) => {
      const i: ImageInfo = { name: c.name, description: c.description, built: !!img.builtImage(c.name) };
      if (c.default) i.default = true;
      return i;
    });
  }

  async ensureImage(name: string, onProgress?: (p: Progress) => void): Promise<void> {
    const built = this.host.img.builtImage(name) !== undefined;
    await this.host.img.ensureImage(name, onProgress);
    if (!built) capCaches(this.host);
  }

  onEvent(listener: (e: HostEvent) => void): () => void {
    return this.host.onEvent(listener);
  }

  /**
   * `opts.cold` boots the image instead of restoring its warm snapshot (benchmarks compare the two; the
   * control plane never sets it).
   */
  create(spec: VmSpec, opts: { cold?: boolean } = {}): Promise<VmRuntime> {
    return create(this.host, spec, opts);
  }

  /** Resolves once no pool refill is running (benchmarks wait on it between repetitions). */
  poolIdle(): Promise<void> {
    return this.host.warmPool.idle();
  }

  pause(sandboxId: string, snapshotId?: string): Promise<SnapshotRef> {
    return pause(this.host, sandboxId, snapshotId);
  }

  async resume(snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
    const rt = await resume(this.host, snapshot, spec);
    // The guest's s3fs survived the pause in its memory; the namespace it woke in needs the proxy forward.
    await this.disks.wire(spec.sandbox_id);
    return rt;
  }

  fork(
    parent: SnapshotRef,
    child: VmSpec,
    opts: ForkOpts = {},
  ): Promise<{ runtime?: VmRuntime; snapshot?: SnapshotRef }> {
    return fork(this.host, parent, child, opts);
  }

  async destroy(sandboxId: string): Promise<void> {
    await destroy(this.host, sandboxId);
    this.disks.forget(sandboxId);
  }

  deleteSnapshot(snapshot: SnapshotRef): Promise<void> {
    return deleteSnapshot(this.host, snapshot);
  }

  resizeDisk(sandboxId: string, diskMib: number): Promise<void> {
    return resizeDisk(this.host, sandboxId, diskMib);
  }

  mountDisk(sandboxId: string, mount: DiskMount): Promise<void> {
    return this.disks.mount(sandboxId, mount);
  }

  unmountDisk(sandboxId: string, mountPath: string): Promise<void> {
    return this.disks.unmount(sandboxId, mountPath);
  }

  async diskStatus(sandboxId: string): Promise<{ mount_path: string; error?: string }[]> {
    return this.disks.status(sandboxId);
  }

  async setDiskCredentials(diskId: string, accessKey: string, secretKey: string): Promise<void> {
    this.disks.setCredentials(diskId, accessKey, secretKey);
  }

  setEgress(sandboxId: string, egress: string[]): Promise<void> {
    return setEgress(this.host, sandboxId, egress);
  }

  takeNetUsage(sandboxId: string): Promise<NetUsage> {
    return takeNetUsage(this.host, sandboxId);
  }

  setBandwidth(sandboxId: string, remainingBytes: number): Promise<void> {
    return setBandwidth(this.host, sandboxId, remainingBytes);
  }

  setNetworks(sandboxId: string, networks: OverlayMembership[]): Promise<void> {
    return setNetworks(this.host, sandboxId, networks);
  }

  commitImage(
    sandboxId: string,
    image: string,
    opts: { keep?: boolean } = {},
  ): Promise<{ image: string; size_bytes: number }> {
    return commitImage(this.host, sandboxId, image, opts, (id) => this.destroy(id));
  }

  deleteImage(image: string): Promise<void> {
    return deleteImage(this.host, image);
  }

  async list(): Promise<{ sandbox_id: string; ip: string; pid: number }[]> {
    return [...this.host.vms.values()]
      .filter((v) => !v.gone)
      .map((v) => ({ sandbox_id: v.rec.sandbox_id, ip: v.rec.ip, pid: v.machine.pid ?? 0 }));
  }

  listSnapshots(): Promise<SnapshotRef[]> {
    return listSnapshots(this.host);
  }

  exec(sandboxId: string, req: ExecRequest, events?: ExecEvents, signal?: AbortSignal): Promise<ExecResult> {
    return this.io.exec(sandboxId, req, events, signal);
  }

  openPty(sandboxId: string, req: PtyRequest): Promise<PtySession> {
    return this.io.openPty(sandboxId, req);
  }

  readFile(sandboxId: string, path: string): Promise<{ stat: FileStat; body: Readable }> {
    return this.io.readFile(sandboxId, path);
  }

  writeFile(sandboxId: string, path: string, body: Readable, mode?: number): Promise<{ bytes: number }> {
    return this.io.writeFile(sandboxId, path, body, mode);
  }

  connectTcp(sandboxId: string, port: number): Promise<Duplex> {
    return this.io.connectTcp(sandboxId, port);
  }

  /** The QEMU process of a running VM (tests, benchmarks). */
  pidOf(sandboxId: string): number | undefined {
    return this.host.vms.get(sandboxId)?.machine.pid;
  }

  async close(): Promise<void> {
    const { host } = this;
    host.closed = true;
    host.capConsoles(false);
    await host.drain();
    await this.disks.close();
    await host.warmPool.close();
    await host.netPool.close();
    await host.nameProxy?.close();
    for (const vm of host.vms.values()) vm.agent.close();
    // Dropping QMP connections leaves QEMU running; the next daemon re-adopts it.
    for (const vm of host.vms.values()) vm.machine.detach();
    host.vms.clear();
    // Gone once no VM of ours is left running (kept, with theirs inside, for the next daemon otherwise).
    await host.cgroups.removeParent();
    await closeStore(host.layout, host.store, host.log);
  }
}
