/**
 * Reconciliation: the database says what was intended, the host's `list()` and `listSnapshots()` what
 * exists. Run for a host when it is attached (a control-plane restart) and when it answers again after
 * being unreachable (its daemon may have restarted, its VMs may have exited). Work the API accepted (a 2xx
 * was sent: pause, resume, destroy) is carried out — completed or redone from its intact inputs, every
 * host call being idempotent by the ids recorded before it — and a fork is redone while its parent's
 * snapshot is there; a row ends `error`/`failed` only when its inputs are gone, saying so. Running rows
 * without a VM become `paused` (snapshot) or `error`; VMs and snapshots no live row owns are removed.
 * Rows with work in flight in this process are left to that work.
 */
import type { HostDaemon, SnapshotRef } from "@createos-sandbox/protocol";
import type { HostRef } from "./hosts.js";
import type { Logger } from "./log.js";
import type { Sandboxes } from "./sandboxes.js";
import type { SandboxPatch, SandboxRow, SandboxStatus, Store } from "./store/types.js";

const RECONCILED = [
  "creating",
  "running",
  "pausing",
  "paused",
  "resuming",
  "forking",
  "destroying",
  "error",
] as const satisfies readonly SandboxStatus[];

const INTERRUPTED = { status_reason: "interrupted by a control-plane restart" };

interface RowCtx {
  set(status: SandboxStatus, why: string, extra?: SandboxPatch): Promise<void>;
  running: SandboxPatch;
  at: string;
  vmIp: string | undefined;
  hasVm: boolean;
  /** The host's complete snapshots, by id. */
  snaps: Map<string, SnapshotRef>;
  /** Runs `fn` under the row's lock after reconcile returns (long host work: resume, fork). */
  later(what: string, fn: () => Promise<void>): void;
}

export async function reconcileHost(sb: Sandboxes, store: Store, log: Logger, host: HostRef): Promise<void> {
  const daemon = host.daemon;
  if (!daemon) return;
  const vms = new Map((await daemon.list()).map((v) => [v.sandbox_id, v]));
  const snaps = new Map((await daemon.listSnapshots()).map((s) => [s.snapshot_id, s]));
  const unclaimed = new Set(snaps.keys());
  // Each host answers for its own rows; rows of a host that is down wait for its recovery.
  const rows = (await store.sandboxesInStatus([...RECONCILED])).filter((r) => r.host_id === host.id);
  const at = new Date().toISOString();
  for (const row of rows) {
    const vm = vms.get(row.id);
    vms.delete(row.id);
    for (const id of [row.snapshot?.snapshot_id, row.pending_snapshot_id]) if (id) unclaimed.delete(id);
    if (sb.isLocked(row.id)) continue;
    const set = async (status: SandboxStatus, why: string, extra: SandboxPatch = {}) => {
      const ok = await store.transition(row.id, [row.status], { status, ...extra });
      log.now("reconciled", { sandbox_id: row.id, from: row.status, to: status, why, applied: ok });
      if (ok && status === "failed") await sb.dropMemberships(row.id);
    };
    const later = (what: string, fn: () => Promise<void>) => {
      log.now(`reconciling: ${what}`, { sandbox_id: row.id });
      void sb.withLock(row.id, fn).catch((e) => log.error(`${what} failed`, { sandbox_id: row.id, err: e }));
    };
    const running = { ip: vm?.ip, running_at: row.running_at ?? at, last_activity_at: Date.now() };
    await reconcileRow(sb, store, log, row, { set, running, at, vmIp: vm?.ip, hasVm: !!vm, snaps, later });
  }
  // Snapshots a paused fork's child row names are claimed by that row (it is `forking`, seen above).
  for (const id of unclaimed) {
    log.now("deleting orphan snapshot", { snapshot_id: id, host_id: host.id });
    await daemon
      .deleteSnapshot(snaps.get(id)!)
      .catch((e) => log.error("orphan snapshot delete failed", { snapshot_id: id, err: e }));
  }
  // VMs no row above claimed (no row, or paused/failed/destroyed): leftovers of interrupted work.
  for (const id of vms.keys()) {
    if (sb.isLocked(id)) continue;
    const row = await store.getSandbox(id);
    log.now("destroying orphan VM", { sandbox_id: id, row_status: row?.status ?? "none", host_id: host.id });
    await daemon.destroy(id).catch((e) => log.error("orphan destroy failed", { sandbox_id: id, err: e }));
  }
}

const lost = (what: string) => ({ status_reason: `${what}: its snapshot is no longer on the host` });

async function reconcileRow(
  sb: Sandboxes,
  store: Store,
  log: Logger,
  row: SandboxRow,
  ctx: RowCtx,
): Promise<void> {
  const { set, running, at, vmIp, hasVm, snaps, later } = ctx;
  const daemon = sb.daemonFor(row);
  const snapOnHost = !!row.snapshot && snaps.has(row.snapshot.snapshot_id);
  switch (row.status) {
    case "creating":
      // A create answers once its VM runs: one a restart interrupted was never acknowledged.
      if (hasVm) await set("running", "VM present", running);
      else await set("failed", "no VM after restart", INTERRUPTED);
      break;
    case "forking":
      return reconcileFork(sb, store, row, ctx, daemon);
    case "pausing":
      if (row.snapshot) {
        if (hasVm) await daemon.destroy(row.id).catch(() => undefined);
        await set("paused", "snapshot recorded", { paused_at: at, clear: ["pending_snapshot_id"] });
      } else if (hasVm || row.pending_snapshot_id) {
        // The pause was accepted: finish it. The host answers the snapshot if it made it already, joins
        // the pause if it is still making it, and says not_found (the row goes `error`, saying so) if the
        // VM and the snapshot are both gone.
        log.now("reconciling: completing interrupted pause", { sandbox_id: row.id });
        await sb.withLock(row.id, () => sb.completePause(daemon, row.id));
      } else
        await set("error", "neither VM nor snapshot", { status_reason: "pause interrupted: the VM is gone" });
      break;
    case "resuming":
      // Accepted (202): redone. The host answers the VM if it runs already, joins a resume in flight, and
      // says not_found when the snapshot is gone (then `error`, with that reason).
      if (hasVm) await set("running", "VM present", { ...running, last_resumed_at: at, clear: ["snapshot"] });
      else if (row.snapshot) later("redoing interrupted resume", () => sb.completeResume(daemon, row.id));
      else await set("error", "neither VM nor snapshot", lost("resume interrupted"));
      break;
    case "paused":
      if (!snapOnHost) await set("error", "snapshot missing", lost("paused"));
      break;
    case "running":
      if (hasVm) {
        if (vmIp !== row.ip) await store.updateSandbox(row.id, { ip: vmIp });
      } else if (snapOnHost) await set("paused", "no VM but a snapshot", { paused_at: at });
      else
        await set("error", "no VM after restart", {
          status_reason: "VM lost while the control plane was down",
        });
      break;
    case "error":
      if (hasVm) await set("running", "VM present", running);
      break;
    case "destroying":
      await sb
        .withLock(row.id, () => sb.completeDestroy(daemon, row.id))
        .catch((e) => log.error("destroy on reconcile failed", { sandbox_id: row.id, err: e }));
      break;
    default:
      break;
  }
}

/** A fork's child: its VM or snapshot is there, or the fork is redone from the parent's intact snapshot. */
async function reconcileFork(
  sb: Sandboxes,
  store: Store,
  row: SandboxRow,
  { set, running, at, hasVm, snaps, later }: RowCtx,
  daemon: HostDaemon,
): Promise<void> {
  if (hasVm) return set("running", "VM present", running);
  const made = row.pending_snapshot_id ? snaps.get(row.pending_snapshot_id) : undefined;
  if (made) {
    await store.updateSandbox(row.id, { snapshot: made, clear: ["pending_snapshot_id"] });
    return set("paused", "snapshot made", { paused_at: at });
  }
  const parent = row.forked_from ? await store.getSandbox(row.forked_from) : undefined;
  const source = parent?.snapshot;
  if (source && snaps.has(source.snapshot_id))
    return later("redoing interrupted fork", () =>
      sb.withLock(parent!.id, () => sb.completeFork(daemon, row.id, source).catch(() => undefined)),
    );
  await set("failed", "parent snapshot gone", {
    status_reason: "fork interrupted by a restart, and the parent's snapshot is gone",
  });
}
