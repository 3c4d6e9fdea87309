/**
 * A scripted HostDaemon for the wire tests: it keeps "VMs" as records and files in memory, echoes exec
 * stdin, and records what it was asked, so the tests can check that every argument, stream byte, abort
 * and error crosses the network unchanged. Real VMs are tested by the conformance suite.
 */
import { EventEmitter } from "node:events";
import { type Duplex, PassThrough, Readable } from "node:stream";
import {
  type DeniedDestination,
  type DiskMount,
  type ExecEvents,
  type ExecRequest,
  type ExecResult,
  type HostDaemon,
  type HostEvent,
  type HostInfo,
  HostdError,
  type NetUsage,
  type OverlayMembership,
  type PtyRequest,
  type PtySession,
  type SnapshotRef,
  type VmRuntime,
  type VmSpec,
} from "@createos-sandbox/protocol";

export class ScriptedDaemon implements HostDaemon {
  readonly vms = new Map<string, VmSpec>();
  readonly files = new Map<string, { data: Buffer; mode: number }>();
  readonly calls: { method: string; args: unknown[] }[] = [];
  readonly resizes: [number, number][] = [];
  /** Bytes the daemon produced into a download so far (to see the reader's pace). */
  produced = 0;
  private readonly ev = new EventEmitter();

  private vm(id: string): VmSpec {
    const v = this.vms.get(id);
    if (!v) throw new HostdError("not_found", `no VM ${id}`);
    return v;
  }

  private log(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
  }

  async info(): Promise<HostInfo> {
    return {
      id: "scripted",
      status: "active",
      accel: "tcg",
      free_mib: 4096,
      vm_count: this.vms.size,
      rootfses: ["debian:12"],
    };
  }
  async images() {
    return [{ name: "debian:12", description: "test", built: true }];
  }
  async ensureImage(name: string, onProgress?: (p: { phase: string; fraction?: number }) => void) {
    if (name !== "debian:12") throw new HostdError("bad_request", `unknown image ${name}`);
    onProgress?.({ phase: "build", fraction: 0.5 });
    onProgress?.({ phase: "build", fraction: 1 });
  }
  async create(spec: VmSpec): Promise<VmRuntime> {
    this.log("create", spec);
    if (this.vms.has(spec.sandbox_id)) throw new HostdError("conflict", `VM ${spec.sandbox_id} exists`);
    this.vms.set(spec.sandbox_id, spec);
    return { sandbox_id: spec.sandbox_id, ip: "10.201.0.1", spawn_ms: 1, boot: "warm" };
  }
  /** Snapshots made and not deleted, by id (a repeated pause of one id answers the same one). */
  readonly snaps = new Map<string, SnapshotRef>();

  async pause(id: string, snapshotId?: string): Promise<SnapshotRef> {
    const made = snapshotId ? this.snaps.get(snapshotId) : undefined;
    if (made) return made;
    const v = this.vm(id);
    this.vms.delete(id);
    const ref: SnapshotRef = {
      snapshot_id: snapshotId ?? `s-${id}`,
      sandbox_id: id,
      mem_mib: v.mem_mib,
      vcpu: v.vcpu,
      disk_mib: v.disk_mib,
      image: v.image,
      size_bytes: 1,
      pause_ms: 1,
    };
    this.snaps.set(ref.snapshot_id, ref);
    return ref;
  }
  async resume(s: SnapshotRef, spec: VmSpec): Promise<VmRuntime> {
    this.log("resume", s, spec);
    this.snaps.delete(s.snapshot_id);
    this.vms.set(spec.sandbox_id, spec);
    return { sandbox_id: spec.sandbox_id, ip: "10.201.0.1", spawn_ms: 1, boot: "resume" };
  }
  async fork(parent: SnapshotRef, child: VmSpec, opts?: { start_paused?: boolean; snapshot_id?: string }) {
    this.log("fork", parent, child, opts);
    if (opts?.start_paused) {
      const id = opts.snapshot_id ?? `s-${child.sandbox_id}`;
      const snap = { ...parent, snapshot_id: id, sandbox_id: child.sandbox_id };
      this.snaps.set(id, snap);
      return { snapshot: snap };
    }
    this.vms.set(child.sandbox_id, child);
    return {
      runtime: { sandbox_id: child.sandbox_id, ip: "10.201.0.2", spawn_ms: 1, boot: "fork" as const },
    };
  }
  async destroy(id: string) {
    this.vms.delete(id);
  }
  async deleteSnapshot(s: SnapshotRef) {
    this.log("deleteSnapshot", s);
    this.snaps.delete(s.snapshot_id);
  }
  async listSnapshots() {
    return [...this.snaps.values()];
  }
  async resizeDisk(id: string, mib: number) {
    this.vm(id).disk_mib = mib;
  }
  async mountDisk(id: string, m: DiskMount) {
    this.vm(id);
    this.log("mountDisk", { id, mount_path: m.mount_path });
  }
  async unmountDisk(id: string, mountPath: string) {
    this.log("unmountDisk", { id, mountPath });
  }
  async diskStatus(id: string) {
    this.vm(id);
    return [];
  }
  async setDiskCredentials(diskId: string) {
    this.log("setDiskCredentials", { diskId });
  }
  async setEgress(id: string, egress: string[]) {
    this.log("setEgress", id, egress);
    this.vm(id).egress = egress;
  }
  /** What the next takeNetUsage of a VM answers (then zeroed, as the host's counters are). */
  readonly usage = new Map<string, Omit<NetUsage, "recent_denied">>();
  /** Its `recent_denied`, which a take leaves as it is (as the host's set). */
  readonly recentDenied = new Map<string, DeniedDestination[]>();
  async takeNetUsage(id: string): Promise<NetUsage> {
    this.vm(id);
    const u = this.usage.get(id) ?? { egress_bytes: 0, ingress_bytes: 0, denied_packets: 0 };
    this.usage.delete(id);
    return { ...u, recent_denied: this.recentDenied.get(id) ?? [] };
  }
  async setBandwidth(id: string, remaining: number) {
    this.log("setBandwidth", id, remaining);
    this.vm(id).bandwidth_remaining_bytes = remaining;
  }
  async setNetworks(id: string, networks: OverlayMembership[]) {
    this.log("setNetworks", id, networks);
    this.vm(id).networks = networks;
  }
  async commitImage(id: string, image: string, opts?: { keep?: boolean }) {
    if (!opts?.keep) this.vms.delete(id);
    return { image, size_bytes: 1 };
  }
  async deleteImage(image: string) {
    this.log("deleteImage", image);
  }
  async list() {
    return [...this.vms.keys()].map((sandbox_id) => ({ sandbox_id, ip: "10.201.0.1", pid: 1 }));
  }

  /**
   * argv[0] "echo-stdin": stdin to stdout; "sleep": waits for abort; "zeros": 64 MiB of output at the
   * consumer's pace (each callback's promise awaited, as the agent waits for credit; `produced` counts it);
   * "fail": stderr + exit 3.
   */
  async exec(id: string, req: ExecRequest, events?: ExecEvents, signal?: AbortSignal): Promise<ExecResult> {
    this.vm(id);
    this.log("exec", { ...req, stdin: req.stdin === undefined ? undefined : "given" });
    if (req.argv[0] === "echo-stdin") {
      const src = Buffer.isBuffer(req.stdin) ? Readable.from([req.stdin]) : req.stdin;
      for await (const c of src ?? []) events?.onStdout?.(c as Buffer);
      return { exit_code: 0, exec_ms: 1 };
    }
    if (req.argv[0] === "zeros") {
      for (let n = 0; n < 64 << 20 && !signal?.aborted; n += 64 << 10) {
        this.produced += 64 << 10;
        await events?.onStdout?.(Buffer.alloc(64 << 10));
      }
      return signal?.aborted
        ? { exit_code: -1, signal: "SIGKILL", exec_ms: 1 }
        : { exit_code: 0, exec_ms: 1 };
    }
    if (req.argv[0] === "sleep") {
      await new Promise((r) => signal?.addEventListener("abort", r, { once: true }));
      return { exit_code: -1, signal: "SIGKILL", exec_ms: 1 };
    }
    events?.onStderr?.(Buffer.from("bad\n"));
    return { exit_code: 3, exec_ms: 1 };
  }

  async openPty(id: string, req: PtyRequest): Promise<PtySession> {
    this.vm(id);
    this.resizes.push([req.rows, req.cols]);
    const stream = new PassThrough();
    let exit!: (r: { exit_code: number }) => void;
    const exited = new Promise<{ exit_code: number }>((r) => {
      exit = r;
    });
    // An echoing terminal: input comes back as output; end of input ends the process with code 7.
    stream.once("finish", () => exit({ exit_code: 7 }));
    return { stream, resize: (r, c) => this.resizes.push([r, c]), signal: () => undefined, exited };
  }

  async readFile(id: string, path: string) {
    this.vm(id);
    if (path === "/big") {
      // 64 MiB produced only as fast as it is read.
      let left = 64;
      const body = new Readable({
        read: () => {
          if (left-- <= 0) return void body.push(null);
          this.produced += 1 << 20;
          body.push(Buffer.alloc(1 << 20, 7));
        },
      });
      return { stat: { size: 64 << 20, mode: 0o644 }, body };
    }
    const f = this.files.get(path);
    if (!f) throw new HostdError("file_not_found", `${path} does not exist`);
    return { stat: { size: f.data.length, mode: f.mode }, body: Readable.from([f.data]) };
  }

  async writeFile(id: string, path: string, body: Readable, mode?: number) {
    this.vm(id);
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of body) {
      n += (c as Buffer).length;
      if (n > 8 << 20) throw new HostdError("too_large", "file over 8 MiB");
      parts.push(c as Buffer);
    }
    this.files.set(path, { data: Buffer.concat(parts), mode: mode ?? 0o644 });
    return { bytes: n };
  }

  /** Port 7 echoes; anything else is refused. */
  async connectTcp(id: string, port: number): Promise<Duplex> {
    this.vm(id);
    if (port !== 7) throw new HostdError("conflict", `nothing listens on ${port}`);
    // A PassThrough is a duplex whose reads are its writes, and whose read side ends when writes end.
    return new PassThrough();
  }

  emit(e: HostEvent): void {
    this.ev.emit("e", e);
  }
  onEvent(l: (e: HostEvent) => void) {
    this.ev.on("e", l);
    return () => void this.ev.off("e", l);
  }
  async close() {}
}
