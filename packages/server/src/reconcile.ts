/**
 * Reconciliation: the database says what was intended, the host's `list()` what exists. Run for a host
 * when it is attached (a control-plane restart) and when it answers again after being unreachable (its
 * daemon may have restarted, its VMs may have exited). Every row in a transitional state is completed or
 * rolled back, running rows without a VM become `paused` (snapshot) or `error`, and VMs no live row owns
 * are destroyed. Rows with work in flight in this process are left to that work.
 */
import type { HostRef } from "./hosts.js";
import type { Logger } from "./log.js";
import type { Sandboxes } from "./sandboxes.js";
import type { SandboxPatch, SandboxRow, SandboxStatus, Store } from "./store/types.js";

const RECONCILED = [
  "creating",
  "running",
  "pausing",
  "resuming",
  "forking",
  "destroying",
  "error",
] as const satisfies readonly SandboxStatus[];

const INTERRUPTED = { status_reason: "interrupted by a control-plane restart" };

export async function reconcileHost(sb: Sandboxes, store: Store, log: Logger, host: HostRef): Promise<void> {
  const daemon = host.daemon;
  if (!daemon) return;
  const vms = new Map((await daemon.list()).map((v) => [v.sandbox_id, v]));
  // Each host answers for its own rows; rows of a host that is down wait for its recovery.
  const rows = (await store.sandboxesInStatus([...RECONCILED])).filter((r) => r.host_id === host.id);
  const at = new Date().toISOString();
  for (const row of rows) {
    const vm = vms.get(row.id);
    vms.delete(row.id);
    if (sb.isLocked(row.id)) continue;
    const set = async (status: SandboxStatus, why: string, extra: SandboxPatch = {}) => {
      const ok = await store.transition(row.id, [row.status], { status, ...extra });
      log.now("reconciled", { sandbox_id: row.id, from: row.status, to: status, why, applied: ok });
      if (ok && status === "failed") await sb.dropMemberships(row.id);
    };
    const running = { ip: vm?.ip, running_at: row.running_at ?? at, last_activity_at: Date.now() };
    await reconcileRow(sb, store, log, row, vm !== undefined, { set, running, at, vmIp: vm?.ip });
  }
  // VMs no row above claimed (no row, or paused/failed/destroyed): leftovers of interrupted work.
  for (const id of vms.keys()) {
    if (sb.isLocked(id)) continue;
    const row = await store.getSandbox(id);
    log.now("destroying orphan VM", { sandbox_id: id, row_status: row?.status ?? "none", host_id: host.id });
    await daemon.destroy(id).catch((e) => log.error("orphan destroy failed", { sandbox_id: id, err: e }));
  }
}

interface RowCtx {
  set(status: SandboxStatus, why: string, extra?: SandboxPatch): Promise<void>;
  running: SandboxPatch;
  at: string;
  vmIp: string | undefined;
}

async function reconcileRow(
  sb: Sandboxes,
  store: Store,
  log: Logger,
  row: SandboxRow,
  hasVm: boolean,
  { set, running, at, vmIp }: RowCtx,
): Promise<void> {
  const daemon = sb.daemonFor(row);
  switch (row.status) {
    case "creating":
    case "forking":
      if (hasVm) await set("running", "VM present", running);
      else if (row.status === "forking" && row.snapshot)
        await set("paused", "snapshot recorded", { paused_at: at });
      else await set("failed", "no VM after restart", INTERRUPTED);
      break;
    case "pausing":
      if (row.snapshot) {
        if (hasVm) await daemon.destroy(row.id).catch(() => undefined);
        await set("paused", "snapshot recorded", { paused_at: at });
      } else if (hasVm) {
        // The pause was asked for and the VM is still there (maybe stopped mid-snapshot): finish it.
        log.now("reconciling: completing interrupted pause", { sandbox_id: row.id });
        await sb.withLock(row.id, () => sb.completePause(daemon, row.id));
      } else
        await set("error", "neither VM nor snapshot", { status_reason: "pause interrupted by a restart" });
      break;
    case "resuming":
      if (hasVm) await set("running", "VM present", { ...running, last_resumed_at: at, clear: ["snapshot"] });
      else if (row.snapshot) await set("paused", "resume rolled back", {});
      else
        await set("error", "neither VM nor snapshot", { status_reason: "resume interrupted by a restart" });
      break;
    case "running":
      if (hasVm) {
        if (vmIp !== row.ip) await store.updateSandbox(row.id, { ip: vmIp });
      } else if (row.snapshot) await set("paused", "no VM but a snapshot", { paused_at: at });
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
