/**
 * The host daemon's whole surface, as the control plane sees it.
 *
 * This is the only way `packages/server` reaches VMs. Every argument and result is plain JSON so the
 * interface can be carried over the network (one HTTP route per method, byte streams as
 * `Upgrade: tcp-tunnel` connections) when hosts become many; today `packages/hostd` implements it
 * in-process. Like Firecracker's action set, each method says when it is allowed; a call outside that
 * state rejects with a {@link HostdError} whose `code` the control plane maps to an API status.
 *
 * Identity: the control plane owns sandbox ids, names and snapshot ids: it records the id before it asks
 * for a pause or a paused fork, and the host daemon keys snapshots by it. The lifecycle calls are
 * idempotent by those ids, so a control plane that crashed mid-call repeats it after its restart: a
 * repeat joins the call still running, or answers what the first one made (the snapshot of that id, the
 * VM of that sandbox). The host daemon keeps its own state on disk under its data dir, crash-safe, so
 * after a restart `list()` reports every VM it re-adopted and `listSnapshots()` every complete snapshot.
 */
import type { Duplex, Readable } from "node:stream";

export type Accel = "kvm" | "tcg";

export interface HostInfo {
  id: string;
  status: "active" | "draining" | "dead";
  accel: Accel;
  /** Host memory not yet promised to VMs, MiB. */
  free_mib: number;
  /** The host's whole memory, MiB. */
  mem_total_mib?: number;
  /** Memory promised to running (and pooled) VMs, MiB. */
  promised_mib?: number;
  /** Host CPUs. */
  vcpus?: number;
  vm_count: number;
  /** Images that are built and can be created from without a build. */
  rootfses: string[];
  /** Present while the host is not usable yet (images building, QEMU missing …). */
  not_ready_reason?: string;
  /**
   * Where this host's VXLAN endpoint listens for other hosts' overlay traffic (issue 12); absent from hosts
   * without overlay support. The control plane lists it in other hosts' `OverlayMembership.remotes`.
   */
  overlay_endpoint?: OverlayEndpoint;
}

/** A host's VXLAN underlay endpoint: UDP `addr`:`port`. */
export interface OverlayEndpoint {
  addr: string;
  port: number;
}

/**
 * One private-network membership of a sandbox as the control plane wants it programmed on the host
 * (protocol.md §2.6–2.7). The host gives the sandbox `ip` on the network, lets it reach the network's other
 * members and nothing else through it, and makes the sandbox's resolver answer the peers' names.
 */
export interface OverlayMembership {
  network_id: string;
  /** The network's name: the resolver answers `<peer name>.<network_name>` as well as `<peer name>`. */
  network_name: string;
  /** VXLAN network identifier, unique per network across the deployment (1 … 16777215). */
  vni: number;
  /** The network's subnet (IPv4 CIDR, e.g. `10.240.3.0/24`), distinct from every other network's. */
  cidr: string;
  /** This member's address inside `cidr`. */
  ip: string;
  /** The network's other members (paused ones included: their addresses stay theirs). */
  peers: OverlayPeer[];
  /** The VXLAN endpoints of the other hosts that have members of this network; `[]` on one host. */
  remotes: OverlayEndpoint[];
}

export interface OverlayPeer {
  sandbox_id: string;
  /** The sandbox's name, when it has one: what the resolver answers besides `<name>.<network_name>`. */
  name?: string;
  ip: string;
}

export interface ImageInfo {
  name: string;
  description: string;
  built: boolean;
  default?: boolean;
}

/** Progress of long work (image builds, warm snapshot creation). */
export interface Progress {
  phase: string;
  /** 0..1 when known. */
  fraction?: number;
  message?: string;
}

export interface VmSpec {
  sandbox_id: string;
  /** Guest hostname. */
  hostname: string;
  image: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  /** CPU time the VM may use, percent of one core (the shape's; default `vcpu` × 100). */
  cpu_quota_pct?: number;
  /** Sandbox-wide env given to every exec; values are secrets — never logged. */
  envs: Record<string, string>;
  /**
   * The egress allowlist (./egress.ts), in force before the guest runs; absent, `[]` or `["*"]`: allow
   * all. The control plane passes the sandbox's stored list on create, resume and fork.
   */
  egress?: string[];
  /**
   * Bytes the guest may still send to the outside world before that traffic stops (the control plane's
   * quota minus its ledger); absent or negative: unmetered. Exec, files, shells and tunnels never count.
   */
  bandwidth_remaining_bytes?: number;
  /**
   * The sandbox's private-network memberships, in force before the guest runs (create, resume, fork).
   * Absent or `[]`: none.
   */
  networks?: OverlayMembership[];
}

/** A running VM's network counters since the previous `takeNetUsage` (or since it started on this host). */
export interface NetUsage {
  /** Bytes the guest sent to the outside world (what the quota meters). */
  egress_bytes: number;
  /** Bytes it received from there. */
  ingress_bytes: number;
  /** Packets the egress allowlist refused. */
  denied_packets: number;
  /**
   * The quota has stopped the guest's outside traffic (possibly a few KiB short of it in counted bytes:
   * the packet that crosses it is dropped whole).
   */
  capped?: boolean;
  /**
   * The destinations the allowlist refused lately, the last refused first (at most 64; each kept for 10
   * minutes after its last refusal). Unlike the counts, a take does not clear it. Absent from older hosts.
   */
  recent_denied?: DeniedDestination[];
}

/** A destination the egress allowlist refused. */
export interface DeniedDestination {
  ip: string;
  /** `tcp`, `udp`, `icmp`… (nft's name, or the protocol number when it has none). */
  proto: string;
  /** 0 for protocols without ports. */
  port: number;
  /** Seconds until it is forgotten unless refused again. */
  expires_in_s: number;
}

export interface VmRuntime {
  sandbox_id: string;
  /** Address the sandbox is reachable at from the host. */
  ip: string;
  /** Wall time of the whole operation on the host, ms. */
  spawn_ms: number;
  /** "warm" when restored from the image's warm snapshot, "cold" when booted. */
  boot: "warm" | "cold" | "resume" | "fork";
}

/**
 * An S3 disk to mount in a guest. The keys stay on the host: the guest's FUSE client talks plain HTTP to
 * the host daemon's disk proxy, which checks the request is inside this mount and re-signs it.
 */
export interface DiskMount {
  disk_id: string;
  /** Absolute path in the guest. */
  mount_path: string;
  /** Bucket prefix exposed at mount_path: relative, no `..`. */
  sub_path?: string;
  bucket: string;
  endpoint: string;
  region?: string;
  use_path_style?: boolean;
  /** Secrets: never logged, never sent into the guest. */
  access_key: string;
  secret_key: string;
}

export interface SnapshotRef {
  snapshot_id: string;
  sandbox_id: string;
  mem_mib: number;
  vcpu: number;
  disk_mib: number;
  image: string;
  /** Bytes on disk (RAM file allocated blocks + disk layer + device state). */
  size_bytes: number;
  pause_ms: number;
}

export interface ExecRequest {
  argv: string[];
  /** Per-exec env, merged over the sandbox envs. */
  env?: Record<string, string>;
  cwd?: string;
  /** Whole stdin, or a stream of it. Absent: /dev/null. */
  stdin?: Buffer | Readable;
  /**
   * A buffered exec: the caller keeps this exec's output in memory, up to this many bytes (output past
   * them is not delivered; the command runs on). What it holds counts against the VM's budget for
   * buffered output: over it the exec is refused, or cancelled, with HostdError("busy").
   */
  bufferBytes?: number;
}

/**
 * Output as it arrives. A callback that returns a promise has not taken the chunk yet: the guest gets no
 * credit for it, and no further chunk is delivered, until the promise settles (ExecOutput), so a slow
 * consumer slows the command instead of filling memory (e.g. `res.write(s) || once(res, "drain")`). Any
 * other return value means the chunk was taken. A rejected promise cancels the exec with that error; the
 * result comes after every chunk before it was taken (or once the exec is aborted).
 */
export interface ExecEvents {
  onStdout?(chunk: Buffer): unknown;
  onStderr?(chunk: Buffer): unknown;
}

export interface ExecResult {
  exit_code: number;
  signal?: string;
  /** Set when the command could not start; exit_code is then -1. */
  error?: string;
  /** Agent-measured fork+exec time. */
  spawn_us?: number;
  /** Host-measured wall time from request to exit, ms. */
  exec_ms: number;
}

export interface PtyRequest {
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  rows: number;
  cols: number;
}

/** An open PTY: write input to `stream`, read merged output from it. */
export interface PtySession {
  stream: Duplex;
  resize(rows: number, cols: number): void;
  signal(name: string): void;
  /** Resolves when the process exits. */
  exited: Promise<{ exit_code: number; signal?: string }>;
}

export interface FileStat {
  size: number;
  mode: number;
}

/** Something that happened on the host without the control plane asking. */
export type HostEvent =
  | { type: "self"; sandbox_id: string; action: "pause" | "delete"; reason?: string }
  | { type: "vm_exited"; sandbox_id: string; reason: string }
  /** Bytes moved over exec/files/shell/tunnel: resets the auto-pause idle clock. */
  | { type: "activity"; sandbox_id: string };

export type HostdErrorCode =
  | "not_found" // no such VM or snapshot on this host
  | "conflict" // the VM is not in a state that allows the action
  | "bad_request" // invalid argument (relative path, unknown image, shrinking disk …)
  | "file_not_found" // guest path does not exist
  | "too_large" // file over the transfer limit
  | "capacity" // not enough host memory or disk
  | "not_ready" // images still building / QEMU unusable
  | "agent_unreachable" // the guest agent did not answer in time
  | "unreachable" // a remote host daemon did not answer (refused, reset, timed out)
  | "unauthorized" // a remote host daemon refused our token
  | "busy" // the VM's cap on open streams or buffered exec output is reached: retry later
  | "internal";

export class HostdError extends Error {
  constructor(
    readonly code: HostdErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "HostdError";
  }
}

export interface HostDaemon {
  /** Always allowed. */
  info(): Promise<HostInfo>;
  /** Always allowed. */
  images(): Promise<ImageInfo[]>;
  /** Builds the image (and its warm snapshot) if missing. Allowed any time; concurrent calls share one build. */
  ensureImage(name: string, onProgress?: (p: Progress) => void): Promise<void>;

  /** Boot a new VM for `spec.sandbox_id` (no VM with that id may exist). Resolves when the agent answered. */
  create(spec: VmSpec): Promise<VmRuntime>;
  /**
   * Running VM → snapshot `snapshotId` (a new one when absent) on durable storage; QEMU exits and host
   * memory is freed. When snapshot `snapshotId` of this sandbox is already complete, answers it.
   */
  pause(sandboxId: string, snapshotId?: string): Promise<SnapshotRef>;
  /**
   * Snapshot → running VM with the same sandbox id. The snapshot is consumed once the VM runs; a failed
   * resume leaves it resumable. When this snapshot's VM already runs, answers it.
   */
  resume(snapshot: SnapshotRef, spec: VmSpec): Promise<VmRuntime>;
  /**
   * New VM (or, with `start_paused`, a new snapshot) for `child.sandbox_id` from a snapshot that stays
   * valid: the parent can still be resumed or forked again. Several forks of one snapshot may run at once.
   * `snapshot_id` names the child's snapshot (`start_paused`). When the child's VM runs, or its snapshot is
   * complete, answers it.
   */
  fork(
    parent: SnapshotRef,
    child: VmSpec,
    opts?: { start_paused?: boolean; snapshot_id?: string },
  ): Promise<{ runtime?: VmRuntime; snapshot?: SnapshotRef }>;
  /**
   * Running or stopped VM: kill it and free everything (processes, sockets, TAPs, files). Idempotent. While
   * a create, resume or fork of the same sandbox is in progress, it waits for that to end, then destroys
   * what came of it.
   */
  destroy(sandboxId: string): Promise<void>;
  /** Delete a snapshot's files. Idempotent. */
  deleteSnapshot(snapshot: SnapshotRef): Promise<void>;
  /**
   * Running VM (a template builder) → its root disk, flushed and flattened, becomes image `image` (a
   * `tpl_…` name the control plane chose); the VM is destroyed, or with `keep` runs on (a build's layer
   * cache: the disk after each step). `create` then takes `image` like a built-in. When `image` exists
   * already, answers it.
   */
  commitImage(
    sandboxId: string,
    image: string,
    opts?: { keep?: boolean },
  ): Promise<{ image: string; size_bytes: number }>;
  /** Remove an image `commitImage` made. Idempotent; built-in names are refused. */
  deleteImage(image: string): Promise<void>;
  /** Running VM: grow its root disk to `diskMib` (> current) live. */
  resizeDisk(sandboxId: string, diskMib: number): Promise<void>;
  /** Running VM: mount an S3 disk (idempotent by mount path); rejects with the mount's failure. */
  mountDisk(sandboxId: string, mount: DiskMount): Promise<void>;
  /** Running VM: flush (sync) and unmount what is at `mountPath`, then forget its grant. Idempotent. */
  unmountDisk(sandboxId: string, mountPath: string): Promise<void>;
  /** The sandbox's mounts, each with the disk's failure its latest requests met (keys refused, bucket gone). */
  diskStatus(sandboxId: string): Promise<{ mount_path: string; error?: string }[]>;
  /** New keys for every mount of `diskId` on this host, in force for the next request. */
  setDiskCredentials(diskId: string, accessKey: string, secretKey: string): Promise<void>;
  /**
   * Running VM: replace its egress allowlist (./egress.ts) atomically and live; the guest sees it within
   * milliseconds, established flows to a destination no longer listed are cut. Rejects a bad rule with
   * `bad_request` naming it. Kept across re-adoption; the control plane passes it again on resume/fork.
   */
  setEgress(sandboxId: string, egress: string[]): Promise<void>;
  /** Running VM: its network counters since the previous call, which zeroes them (the caller keeps the sum). */
  takeNetUsage(sandboxId: string): Promise<NetUsage>;
  /**
   * Running VM: the bytes it may still send to the outside world (negative: unmetered), in force at once;
   * past them its outside traffic stops until this is called again with more.
   */
  setBandwidth(sandboxId: string, remainingBytes: number): Promise<void>;
  /**
   * Running VM: replace its private-network memberships with `networks` (declarative and idempotent: the
   * whole set each time, so peers joining, leaving or renamed are a call with the new lists). In force
   * before it resolves — addresses reachable, removed memberships cut, names answered. Rejects an invalid
   * membership (bad CIDR, `ip` outside it, VNI out of range) with `bad_request`. Kept across re-adoption;
   * the control plane passes the set again on resume (`VmSpec.networks`). Overlay traffic is not subject to
   * the egress allowlist nor counted against the bandwidth quota.
   */
  setNetworks(sandboxId: string, networks: OverlayMembership[]): Promise<void>;
  /** Running VMs this host knows (after a restart: the re-adopted ones). */
  list(): Promise<{ sandbox_id: string; ip: string; pid: number }[]>;
  /** Complete snapshots on this host (after a restart: the ones re-adoption kept or finished). */
  listSnapshots(): Promise<SnapshotRef[]>;

  /** Running VM. The promise resolves at exit; aborting `signal` kills the process group. */
  exec(sandboxId: string, req: ExecRequest, events?: ExecEvents, signal?: AbortSignal): Promise<ExecResult>;
  /** Running VM. */
  openPty(sandboxId: string, req: PtyRequest): Promise<PtySession>;
  /** Running VM. Rejects with `file_not_found`. */
  readFile(sandboxId: string, path: string): Promise<{ stat: FileStat; body: Readable }>;
  /** Running VM. Parent directories are created; the write is atomic (temp file + rename). */
  writeFile(sandboxId: string, path: string, body: Readable, mode?: number): Promise<{ bytes: number }>;
  /** Running VM: a byte stream to `127.0.0.1:port` inside the guest, half-close honoured. */
  connectTcp(sandboxId: string, port: number): Promise<Duplex>;

  /** Subscribe to host events; returns an unsubscribe function. */
  onEvent(listener: (e: HostEvent) => void): () => void;
  /** Stop serving; running VMs keep running (they are re-adopted by the next start). */
  close(): Promise<void>;
}
