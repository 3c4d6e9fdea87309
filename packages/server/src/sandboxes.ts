/**
 * Sandbox lifecycle: the only code that changes a sandbox's status or calls the host daemon's lifecycle
 * methods. Every step records the intended transition in the store (compare-and-set on status) before the
 * daemon is called, and the outcome after, so `reconcile()` can finish or roll back whatever a crash
 * interrupted. API routes, the auto-pause scheduler and self-signal events all come through here.
 */
import { crashPoint } from "@createos-sandbox/hostd/sys/crash";
import type { HostDaemon, HostEvent, SnapshotRef, VmSpec } from "@createos-sandbox/protocol";
import { type ApiError, apiError, validationError } from "@createos-sandbox/protocol";
import { randomName } from "./catalog.js";
import type { ServerConfig } from "./config.js";
import { mapHostdError, publicMessage } from "./hosterr.js";
import type { HostRef, Hosts } from "./hosts.js";
import { type Claim, checkTenantLimits } from "./limits.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import { NetLedger } from "./netpolicy.js";
import type { Overlay } from "./overlay/service.js";
import { reconcileHost } from "./reconcile.js";
import { type CreateInput, type ForkInput, childRow, createRow } from "./rows.js";
import { type Plan, plan } from "./state.js";
import type { SandboxRow, Store } from "./store/types.js";
import { newSandboxId, ulid } from "./ulid.js";

export type { HostRef } from "./hosts.js";

export type { CreateInput, ForkInput } from "./rows.js";

const iso = () => new Date().toISOString();
/** Snapshot ids are the control plane's, recorded before the host daemon is asked to make one. */
const newSnapshotId = () => `snap-${ulid().toLowerCase()}`;
/** Statuses a runtime call (exec, files, shell, tunnel) waits out rather than refusing. */
const BECOMING_RUNNING: readonly string[] = ["creating", "resuming", "forking"];
/** How long a runtime call waits for a sandbox to become running. */
export const RUNTIME_WAIT_MS = 30_000;
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).slice(0, 500);

export class Sandboxes {
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Open shells, tunnels and exec streams per sandbox: a sandbox with one is never idle. */
  readonly openStreams = new Map<string, number>();
  /** The bandwidth ledger and refusal counts (netpolicy.ts). */
  readonly net: NetLedger;

  constructor(
    private readonly store: Store,
    private readonly hosts: Hosts,
    private readonly cfg: ServerConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Private networks: memberships and what their hosts are told (overlay/service.ts). */
    readonly overlay: Overlay,
  ) {
    this.net = new NetLedger(store, metrics);
  }

  /** Told of each sandbox destroyed, with its rootfs (a deleted template's image may now go: app.ts). */
  onDestroyed: (rootfs: string) => void = () => undefined;

  /** The daemon of the sandbox's host, or a 503 before anything changed (so the client's retry is safe). */
  daemonFor(row: Pick<SandboxRow, "host_id">): HostDaemon {
    return this.hosts.daemonOf(row.host_id);
  }

  /** Like daemonFor(), but also refuses while that host is not ready (new VMs need the default image). */
  readyDaemonFor(row: Pick<SandboxRow, "host_id">): HostDaemon {
    return this.hosts.daemonOf(row.host_id, { ready: true });
  }

  /** Times a daemon call into the VM operation histogram. */
  async vm<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn();
      this.metrics.vmOp(op, true, (performance.now() - t0) / 1000);
      return r;
    } catch (e) {
      this.metrics.vmOp(op, false, (performance.now() - t0) / 1000);
      throw e;
    }
  }

  /** Serialises lifecycle work per sandbox inside this process; cross-process safety is the store's CAS. */
  withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return next;
  }

  isLocked(id: string): boolean {
    return this.locks.has(id);
  }

  private async mustGet(id: string): Promise<SandboxRow> {
    const row = await this.store.getSandbox(id);
    if (!row) throw apiError("sandbox_not_found", { id });
    return row;
  }

  private conflict(action: string, status: string): ApiError {
    return apiError("state_conflict", { action, status });
  }

  private limits = (userId: string, claim: Claim) => checkTenantLimits(this.store, this.cfg, userId, claim);

  private async pickName(userId: string, wanted: string | undefined): Promise<string> {
    if (wanted) {
      if (await this.store.nameInUse(userId, wanted))
        throw apiError("name_taken", { kind: "sandbox", name: wanted });
      return wanted;
    }
    for (let i = 0; i < 20; i++) {
      const n = randomName();
      if (!(await this.store.nameInUse(userId, n))) return n;
    }
    return `${randomName()}-${Math.random().toString(36).slice(2, 6)}`;
  }

  private async insert(row: SandboxRow): Promise<void> {
    try {
      await this.store.insertSandbox(row);
    } catch (e) {
      // The partial unique index on live names catches a concurrent create with the same name.
      if (/UNIQUE/.test(errText(e))) throw apiError("name_taken", { kind: "sandbox", name: row.name });
      throw e;
    }
  }

  async create(userId: string, createdBy: string, input: CreateInput): Promise<SandboxRow> {
    await this.limits(userId, { running: true, sandboxes: 1, disk_mib: input.disk_mib });
    const host = this.hosts.place(input.mem_mib, input.rootfs, input.host_id);
    const daemon = host.daemon!;
    const name = await this.pickName(userId, input.name);
    const row = createRow(
      input,
      { id: newSandboxId(), userId, createdBy, name, hostId: host.id },
      this.cfg.region,
    );
    await this.insert(row);
    return this.withLock(row.id, async () => {
      let spec: VmSpec;
      try {
        await this.overlay.joinAtStart(row.id, input.network_ids);
        spec = this.overlay.vmSpec(row);
        const rt = await this.vm("create", () => daemon.create(spec));
        await this.store.transition(row.id, ["creating"], {
          status: "running",
          ip: rt.ip,
          spawn_ms: rt.spawn_ms,
          running_at: iso(),
          last_activity_at: Date.now(),
        });
      } catch (e) {
        this.log.warn("create failed", { sandbox_id: row.id, err: errText(e) });
        await this.store.transition(row.id, ["creating"], {
          status: "failed",
          status_reason: publicMessage(e, { action: "create" }),
        });
        await this.dropMemberships(row.id);
        await daemon.destroy(row.id).catch(() => undefined);
        throw mapHostdError(e, { action: "create" });
      }
      await this.overlay.started(row.id, spec.networks ?? []);
      return this.mustGet(row.id);
    });
  }

  /** pause: 202 and `pausing` now, `paused` shortly after; 200 when already paused. */
  async pause(row: SandboxRow, reason?: string): Promise<{ code: 200 | 202; row: SandboxRow }> {
    const daemon = this.daemonFor(row);
    const p = plan("pause", row.status);
    if (p.kind === "noop") return { code: 200, row };
    if (p.kind !== "go") throw this.conflict("pause", row.status);
    // Only API pauses are refused: refusing the scheduler or a self-pause would keep the VM running.
    if (!reason) await this.limits(row.user_id, { snapshot: true });
    const ok = await this.store.transition(row.id, p.from, {
      status: p.to,
      pending_snapshot_id: newSnapshotId(),
      ...(reason ? { status_reason: reason } : { clear: ["status_reason"] }),
    });
    if (!ok) return this.pause(await this.mustGet(row.id), reason);
    void this.withLock(row.id, () => this.completePause(daemon, row.id)).catch((e) =>
      this.log.error("pause completion failed", { sandbox_id: row.id, err: e }),
    );
    return { code: 202, row: await this.mustGet(row.id) };
  }

  /** Idempotent by the row's pending snapshot id: a restart repeats it to finish an interrupted pause. */
  async completePause(daemon: HostDaemon, id: string): Promise<void> {
    const row = await this.mustGet(id);
    if (row.status !== "pausing") return;
    const snapId = row.pending_snapshot_id ?? newSnapshotId();
    if (!row.pending_snapshot_id) await this.store.updateSandbox(id, { pending_snapshot_id: snapId });
    // The namespace and its byte counters go with the VM: into the ledger first (netpolicy.ts).
    await this.net
      .fold(daemon, row)
      .catch((e) => this.log.warn("bandwidth fold failed", { sandbox_id: id, err: errText(e) }));
    let snap: SnapshotRef;
    try {
      snap = await this.vm("pause", () => daemon.pause(id, snapId));
    } catch (e) {
      this.log.warn("pause failed", { sandbox_id: id, err: errText(e) });
      const stillRunning = await this.vmPresent(daemon, id);
      await this.store.transition(id, ["pausing"], {
        status: stillRunning ? "running" : "error",
        status_reason: `pause failed: ${publicMessage(e, { action: "pause" })}`,
        clear: ["pending_snapshot_id"],
      });
      return;
    }
    crashPoint("pause.before_db");
    // The snapshot is recorded before the status flips: a destroy that raced us still finds it to delete.
    await this.store.updateSandbox(id, { snapshot: snap, clear: ["pending_snapshot_id"] });
    await this.store.transition(id, ["pausing"], { status: "paused", paused_at: iso() });
  }

  private async vmPresent(daemon: HostDaemon, id: string): Promise<boolean> {
    try {
      return (await daemon.list()).some((v) => v.sandbox_id === id);
    } catch {
      return false;
    }
  }

  /** resume: 202 and `resuming` now; 200 when already running. */
  async resume(row: SandboxRow): Promise<{ code: 200 | 202; row: SandboxRow }> {
    const daemon = this.readyDaemonFor(row);
    const p = plan("resume", row.status);
    if (p.kind === "noop") return { code: 200, row };
    if (p.kind !== "go") throw this.conflict("resume", row.status);
    if (!row.snapshot) throw this.conflict("resume", `${row.status} without a snapshot`);
    await this.limits(row.user_id, { running: true });
    const ok = await this.store.transition(row.id, p.from, { status: p.to, clear: ["status_reason"] });
    if (!ok) return this.resume(await this.mustGet(row.id));
    void this.withLock(row.id, () => this.completeResume(daemon, row.id)).catch((e) =>
      this.log.error("resume completion failed", { sandbox_id: row.id, err: e }),
    );
    return { code: 202, row: await this.mustGet(row.id) };
  }

  /** Idempotent: the host answers the VM a repeat of this resume already started. */
  async completeResume(daemon: HostDaemon, id: string): Promise<void> {
    const row = await this.mustGet(id);
    if (row.status !== "resuming" || !row.snapshot) return;
    try {
      const spec = this.overlay.vmSpec(row);
      const rt = await this.vm("resume", () => daemon.resume(row.snapshot!, spec));
      const at = iso();
      await this.store.transition(id, ["resuming"], {
        status: "running",
        ip: rt.ip,
        running_at: at,
        last_resumed_at: at,
        last_activity_at: Date.now(),
        clear: ["snapshot"],
      });
      await this.overlay.started(id, spec.networks ?? []);
    } catch (e) {
      this.log.warn("resume failed", { sandbox_id: id, err: errText(e) });
      // `error` keeps the snapshot: POST /resume again retries (protocol.md §2.0).
      await this.store.transition(id, ["resuming"], {
        status: "error",
        status_reason: `resume failed: ${publicMessage(e, { action: "resume" })}`,
      });
    }
  }

  /** fork: a new sandbox from a paused one's snapshot; answers once the child is running (or paused). */
  async fork(parentRow: SandboxRow, input: ForkInput): Promise<SandboxRow> {
    // The child starts where the parent's snapshot is (`host_id` is copied with the rest of the row).
    const daemon = this.readyDaemonFor(parentRow);
    let parent = parentRow;
    let p: Plan = plan("fork", parent.status);
    // Forking a `pausing` sandbox waits for its snapshot (protocol.md §7.10).
    for (let i = 0; p.kind === "wait" && i < 600; i++) {
      await new Promise((r) => setTimeout(r, 100));
      parent = await this.mustGet(parent.id);
      p = plan("fork", parent.status);
    }
    if (p.kind !== "go" || !parent.snapshot) throw this.conflict("fork", parent.status);
    // A paused child holds no VM but a disk and a snapshot: it counts against every other limit.
    const sp = input.start_paused;
    await this.limits(parent.user_id, {
      running: !sp,
      sandboxes: 1,
      disk_mib: parent.disk_mib,
      snapshot: sp,
    });
    const child = childRow(parent, input, {
      id: newSandboxId(),
      name: await this.pickName(parent.user_id, undefined),
      snapshotId: newSnapshotId(),
    });
    await this.insert(child);
    const snapshot = parent.snapshot;
    return this.withLock(parent.id, () =>
      this.withLock(child.id, async () => {
        await this.completeFork(daemon, child.id, snapshot, input.network_ids);
        return this.mustGet(child.id);
      }),
    );
  }

  /**
   * The host half of a fork, idempotent by the child's id (and its pending snapshot id when it starts
   * paused): a restart repeats it while the parent's snapshot is intact.
   */
  async completeFork(daemon: HostDaemon, childId: string, snap: SnapshotRef, nets?: string[]): Promise<void> {
    const child = await this.mustGet(childId);
    if (child.status !== "forking") return;
    const startPaused = child.pending_snapshot_id !== undefined;
    try {
      // Memberships are the request's to ask for (docs/ARCHITECTURE.md): a fork inherits none.
      await this.overlay.joinAtStart(child.id, nets ?? []);
      const opts = startPaused ? { start_paused: true, snapshot_id: child.pending_snapshot_id! } : {};
      const spec = this.overlay.vmSpec(child);
      const res = await this.vm("fork", () => daemon.fork(snap, spec, opts));
      if (res.runtime) {
        await this.store.transition(child.id, ["forking"], {
          status: "running",
          ip: res.runtime.ip,
          spawn_ms: res.runtime.spawn_ms,
          running_at: iso(),
          last_activity_at: Date.now(),
        });
        await this.overlay.started(child.id, spec.networks ?? []);
      } else if (res.snapshot) {
        await this.store.updateSandbox(child.id, { snapshot: res.snapshot, clear: ["pending_snapshot_id"] });
        await this.store.transition(child.id, ["forking"], { status: "paused", paused_at: iso() });
      } else {
        throw new Error("host daemon returned neither a VM nor a snapshot");
      }
    } catch (e) {
      this.log.warn("fork failed", { sandbox_id: child.id, parent: child.forked_from, err: errText(e) });
      await this.store.transition(child.id, ["forking"], {
        status: "failed",
        status_reason: publicMessage(e, { action: "fork" }),
      });
      await this.dropMemberships(child.id);
      await daemon.destroy(child.id).catch(() => undefined);
      throw mapHostdError(e, { action: "fork" });
    }
  }

  /** destroy: `destroying` now, `destroyed` once the host freed everything; idempotent. */
  async destroy(
    row: SandboxRow,
    reason?: string,
  ): Promise<{ id: string; status: "destroying" | "destroyed" }> {
    const p = plan("destroy", row.status);
    if (p.kind === "noop")
      return { id: row.id, status: row.status === "destroying" ? "destroying" : "destroyed" };
    if (p.kind !== "go") throw this.conflict("destroy", row.status);
    if (p.to === "destroyed") {
      // A failed row holds no VM: nothing to reclaim.
      const ok = await this.store.transition(row.id, p.from, { status: "destroyed", destroyed_at: iso() });
      if (!ok) return this.destroy(await this.mustGet(row.id), reason);
      this.net.forget(row.id);
      return { id: row.id, status: "destroyed" };
    }
    const daemon = this.daemonFor(row);
    const ok = await this.store.transition(row.id, p.from, {
      status: "destroying",
      ...(reason ? { status_reason: reason } : {}),
    });
    if (!ok) return this.destroy(await this.mustGet(row.id), reason);
    // No longer a member from now (store/networks.ts); its peers are told while the VM goes.
    void this.dropMemberships(row.id).catch((e) => this.log.warn("leaving networks failed", { err: e }));
    void this.withLock(row.id, () => this.completeDestroy(daemon, row.id)).catch((e) =>
      this.log.error("destroy completion failed; retried by the scheduler", { sandbox_id: row.id, err: e }),
    );
    return { id: row.id, status: "destroying" };
  }

  /** The scheduler's retry of a destroy that did not complete (its host was down, say). */
  retryDestroy(row: SandboxRow): Promise<void> {
    const daemon = this.daemonFor(row);
    return this.withLock(row.id, () => this.completeDestroy(daemon, row.id));
  }

  async completeDestroy(daemon: HostDaemon, id: string): Promise<void> {
    const row = await this.mustGet(id);
    if (row.status !== "destroying") return;
    await this.vm("destroy", () => daemon.destroy(id));
    crashPoint("destroy.mid");
    // A pause or paused fork that was interrupted may have made its snapshot under the pending id.
    const pending = row.pending_snapshot_id
      ? [{ ...row.snapshot!, snapshot_id: row.pending_snapshot_id }]
      : [];
    for (const snap of [...(row.snapshot ? [row.snapshot] : []), ...pending])
      await this.vm("delete_snapshot", () => daemon.deleteSnapshot(snap));
    await this.dropMemberships(id);
    await this.store.transition(id, ["destroying"], {
      status: "destroyed",
      destroyed_at: iso(),
      clear: ["snapshot", "pending_snapshot_id", "access_token_hash"],
    });
    this.net.forget(id);
    this.onDestroyed(row.rootfs);
  }

  /** A sandbox that ended (destroyed, failed) leaves its networks, so they can be deleted. */
  dropMemberships(id: string): Promise<void> {
    return this.overlay.leaveAll(id);
  }

  async resize(row: SandboxRow, diskMib: number): Promise<SandboxRow> {
    const daemon = this.daemonFor(row);
    if (row.status !== "running") throw this.conflict("resize", row.status);
    if (diskMib <= row.disk_mib) {
      throw validationError({
        disk_mib: `disk_mib must be larger than the current ${row.disk_mib} (disks only grow)`,
      });
    }
    await this.limits(row.user_id, { disk_mib: diskMib - row.disk_mib });
    return this.withLock(row.id, async () => {
      try {
        await this.vm("resize", () => daemon.resizeDisk(row.id, diskMib));
      } catch (e) {
        throw mapHostdError(e, { action: "resize" });
      }
      await this.store.updateSandbox(row.id, { disk_mib: diskMib });
      return this.mustGet(row.id);
    });
  }

  /**
   * Runtime calls on a sandbox on its way to `running` (creating, resuming, forking) wait for it, up to
   * `waitMs`, instead of refusing: a client that resumes and reads a file at once just works. Any other
   * status is refused at once (paused with a hint to resume).
   */
  async awaitRunning(row: SandboxRow, action: string, waitMs = RUNTIME_WAIT_MS): Promise<SandboxRow> {
    const until = Date.now() + waitMs;
    let r = row;
    while (r.status !== "running") {
      if (r.status === "paused") throw apiError("sandbox_paused", { action, id: r.id });
      if (!BECOMING_RUNNING.includes(r.status)) throw this.conflict(action, r.status);
      if (Date.now() >= until)
        throw apiError("transition_timeout", {
          action,
          status: r.status,
          seconds: Math.round(waitMs / 1000),
        });
      await new Promise((res) => setTimeout(res, 100));
      r = await this.mustGet(r.id);
    }
    return r;
  }

  streamOpened(id: string): void {
    this.openStreams.set(id, (this.openStreams.get(id) ?? 0) + 1);
    void this.touch(id);
  }

  streamClosed(id: string): void {
    const n = (this.openStreams.get(id) ?? 1) - 1;
    if (n <= 0) this.openStreams.delete(id);
    else this.openStreams.set(id, n);
    void this.touch(id);
  }

  async touch(id: string): Promise<void> {
    await this.store.touchActivity(id, Date.now()).catch(() => undefined);
  }

  /** Self-signals and VM exits reported by a host go through the same paths as the API. */
  async onHostEvent(e: HostEvent, hostId: string): Promise<void> {
    if (e.type === "activity") return this.touch(e.sandbox_id);
    const row = await this.store.getSandbox(e.sandbox_id);
    // A host speaks only for the sandboxes placed on it.
    if (!row || row.host_id !== hostId) return;
    if (e.type === "self") {
      const reason = `self-${e.action}${e.reason ? `: ${e.reason.slice(0, 128)}` : ""}`;
      this.log.info("self signal", { sandbox_id: row.id, action: e.action, reason });
      try {
        if (e.action === "pause") await this.pause(row, reason);
        else await this.destroy(row, reason);
      } catch (err) {
        this.log.warn("self signal refused", { sandbox_id: row.id, err: errText(err) });
      }
      return;
    }
    if (e.type === "vm_exited" && row.status === "running") {
      await this.store.transition(row.id, ["running"], {
        status: "error",
        status_reason: `VM exited: ${e.reason}`,
      });
      this.log.warn("VM exited", { sandbox_id: row.id, reason: e.reason });
    }
  }

  /** After a restart, or when a host answers again: see reconcile.ts. */
  async reconcile(host: HostRef): Promise<void> {
    await reconcileHost(this, this.store, this.log, host);
    await this.overlay.repushHost(host.id);
  }
}
