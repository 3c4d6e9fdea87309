/**
 * A sandbox's network policy as the control plane keeps it: its egress allowlist (in force on the host
 * before it is stored) and its bandwidth ledger. The host counts the guest's bytes in the kernel and
 * `takeNetUsage` hands over what it counted since the last take; the ledger (`bandwidth_used_bytes`,
 * `bandwidth_ingress_bytes` in the row) adds each take, so it survives pause, resume, restarts of either
 * side and moves with the row. Takes happen on every bandwidth read, before a pause (the namespace goes
 * with the VM) and before a recharge; the host's quota is what is left of `bandwidth_quota_bytes`, handed
 * over on create/resume/fork (vmSpec) and after a recharge. What the guest sends between the last take
 * and a host crash is lost (never billed); the host's own quota object stops the guest at the same point
 * whether or not the control plane has folded.
 */
import type { DeniedDestination, HostDaemon, NetUsage } from "@createos-sandbox/protocol";
import { type api, apiError } from "@createos-sandbox/protocol";
import { mapHostdError } from "./hosterr.js";
import type { Metrics } from "./metrics.js";
import type { Sandboxes } from "./sandboxes.js";
import type { SandboxRow, Store } from "./store/types.js";
import { bandwidthView } from "./views.js";

export const BANDWIDTH_QUOTA_ENV = "CREATEOS_SANDBOX_BANDWIDTH_QUOTA_BYTES";
const DEFAULT_QUOTA = 10 * 1024 ** 3;
/** GET …/egress shows at most this many refused destinations (what a host keeps). */
const RECENT_DENIED_MAX = 64;

/** A new sandbox's quota: `$CREATEOS_SANDBOX_BANDWIDTH_QUOTA_BYTES`, default 10 GiB; -1 = unmetered. */
export function defaultBandwidthQuota(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[BANDWIDTH_QUOTA_ENV]?.trim();
  if (!v) return DEFAULT_QUOTA;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < -1)
    throw new Error(
      `${BANDWIDTH_QUOTA_ENV} must be a byte count or -1 (unmetered), not ${JSON.stringify(v)}`,
    );
  return n;
}

/** What the host may still let the guest send (negative: unmetered). */
export function remainingBytes(
  row: Pick<SandboxRow, "bandwidth_quota_bytes" | "bandwidth_used_bytes">,
): number {
  if (row.bandwidth_quota_bytes < 0) return -1;
  return Math.max(0, row.bandwidth_quota_bytes - row.bandwidth_used_bytes);
}

export class NetLedger {
  /** Refusals of each sandbox's allowlist since this process started (GET …/egress `denied_packets`). */
  private readonly denied = new Map<string, number>();
  /** The last `recent_denied` each sandbox's host answered, and when (GET …/egress `recent_denied`). */
  private readonly recent = new Map<string, { at: number; list: DeniedDestination[] }>();

  constructor(
    private readonly store: Store,
    private readonly metrics: Metrics,
  ) {}

  deniedPackets(id: string): number {
    return this.denied.get(id) ?? 0;
  }

  /** The host's last answer, aged by the time since (a paused VM's list runs out as its set would). */
  recentDenied(id: string, now = Date.now()): DeniedDestination[] {
    const r = this.recent.get(id);
    if (!r) return [];
    const gone = Math.floor((now - r.at) / 1000);
    return r.list
      .filter((d) => d.expires_in_s > gone)
      .map((d) => ({ ...d, expires_in_s: d.expires_in_s - gone }));
  }

  /** A destroyed sandbox leaves no counts and no Prometheus series behind. */
  forget(id: string): void {
    this.denied.delete(id);
    this.recent.delete(id);
    this.metrics.forgetSandbox(id);
  }

  /** Adds what the host counted since the last take to the row (the caller holds the sandbox's lock). */
  async fold(daemon: HostDaemon, row: SandboxRow): Promise<SandboxRow> {
    if (row.status !== "running" && row.status !== "pausing") return row;
    const u: NetUsage = await daemon.takeNetUsage(row.id);
    if (u.denied_packets > 0) this.denied.set(row.id, this.deniedPackets(row.id) + u.denied_packets);
    // An older host sends none: the list it gave before, if any, stands.
    if (u.recent_denied)
      this.recent.set(row.id, { at: Date.now(), list: u.recent_denied.slice(0, RECENT_DENIED_MAX) });
    this.metrics.netUsage(row.id, u);
    let used = row.bandwidth_used_bytes + u.egress_bytes;
    // The host stopped the guest at its quota: what the last, dropped packet left unsent (under 64 KiB)
    // counts as used, so that `capped` says what the guest sees.
    if (u.capped && row.bandwidth_quota_bytes >= 0) used = Math.max(used, row.bandwidth_quota_bytes);
    if (used === row.bandwidth_used_bytes && u.ingress_bytes === 0) return row;
    const patch = {
      bandwidth_used_bytes: used,
      bandwidth_ingress_bytes: row.bandwidth_ingress_bytes + u.ingress_bytes,
    };
    await this.store.updateSandbox(row.id, patch);
    return { ...row, ...patch };
  }
}

/** The row as the store has it now (under the caller's lock). */
async function current(store: Store, id: string): Promise<SandboxRow> {
  const row = await store.getSandbox(id);
  if (!row) throw apiError("sandbox_not_found", { id });
  return row;
}

/** Folds the host's counters in when the VM runs; a host that cannot answer leaves the ledger as it is. */
async function folded(sb: Sandboxes, store: Store, id: string): Promise<SandboxRow> {
  const row = await current(store, id);
  if (row.status !== "running") return row;
  return sb.net.fold(sb.daemonFor(row), row).catch(() => row);
}

/**
 * Replaces the egress allowlist: on the host first when the VM runs (atomic and live there; a refusal
 * changes nothing), then in the row, which resume and fork pass on. Under the sandbox's lock, so a resume
 * or create in flight finishes first and the rules reach the VM it made.
 */
export function setEgress(
  sb: Sandboxes,
  store: Store,
  row: SandboxRow,
  egress: string[],
): Promise<SandboxRow> {
  return sb.withLock(row.id, async () => {
    const cur = await current(store, row.id);
    if (cur.status === "running") {
      const daemon = sb.daemonFor(cur);
      try {
        await sb.vm("egress", () => daemon.setEgress(cur.id, egress));
      } catch (e) {
        throw mapHostdError(e, { action: "set egress on" });
      }
    }
    await store.updateSandbox(row.id, { egress });
    return current(store, row.id);
  });
}

/** GET …/egress: the rules and the refusals, folded first when the VM runs (as a bandwidth read). */
export function egressView(
  sb: Sandboxes,
  store: Store,
  row: SandboxRow,
): Promise<{ id: string; egress: string[]; denied_packets: number; recent_denied: DeniedDestination[] }> {
  return sb.withLock(row.id, async () => {
    const cur = await folded(sb, store, row.id);
    return {
      id: cur.id,
      egress: cur.egress,
      denied_packets: sb.net.deniedPackets(cur.id),
      recent_denied: sb.net.recentDenied(cur.id),
    };
  });
}

export function bandwidth(sb: Sandboxes, store: Store, row: SandboxRow): Promise<api.BandwidthView> {
  return sb.withLock(row.id, async () => bandwidthView(await folded(sb, store, row.id)));
}

/** Adds `add` to the quota (a no-op when unmetered) and lifts the host's cap to match at once. */
export function recharge(
  sb: Sandboxes,
  store: Store,
  row: SandboxRow,
  add: number,
): Promise<api.BandwidthView> {
  return sb.withLock(row.id, async () => {
    const cur = await folded(sb, store, row.id);
    if (cur.bandwidth_quota_bytes < 0) return bandwidthView(cur);
    const next = { ...cur, bandwidth_quota_bytes: cur.bandwidth_quota_bytes + add };
    await store.updateSandbox(row.id, { bandwidth_quota_bytes: next.bandwidth_quota_bytes });
    if (cur.status === "running") {
      const daemon = sb.daemonFor(cur);
      try {
        await sb.vm("bandwidth", () => daemon.setBandwidth(cur.id, remainingBytes(next)));
      } catch (e) {
        // Stored: the next resume hands the host the new quota in any case.
        throw mapHostdError(e, { action: "recharge" });
      }
    }
    return bandwidthView(next);
  });
}
