/**
 * Per-tenant limits, so one tenant cannot exhaust the hosts: sandboxes holding a VM (the running limit),
 * sandboxes of any status but destroyed/failed (paused ones keep a disk and a snapshot), the sum of their
 * `disk_mib`, and the sum of their recorded snapshot sizes. Checked before anything is recorded; two
 * concurrent requests may both pass by one, which a limit of this kind tolerates.
 */
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "./config.js";
import { HELD, LIVE } from "./state.js";
import type { Store } from "./store/types.js";

/** What an action is about to add. */
export interface Claim {
  /** It starts a VM (create, resume, fork). */
  running?: boolean;
  /** New sandboxes (create, fork). */
  sandboxes?: number;
  /** MiB of disk added (create, fork, resize). */
  disk_mib?: number;
  /** It writes a new snapshot (pause, `start_paused` fork). */
  snapshot?: boolean;
}

export type TenantLimits = Pick<
  ServerConfig,
  "maxRunningPerTenant" | "maxSandboxesPerTenant" | "maxDiskMibPerTenant" | "maxSnapshotBytesPerTenant"
>;

/** Throws the 403 of the first limit `claim` would exceed. */
export async function checkTenantLimits(
  store: Store,
  cfg: TenantLimits,
  userId: string,
  claim: Claim,
): Promise<void> {
  if (claim.running && (await store.countSandboxes(userId, [...LIVE])) >= cfg.maxRunningPerTenant)
    throw apiError("limit_running", { limit: cfg.maxRunningPerTenant });
  const add = { sandboxes: claim.sandboxes ?? 0, disk: claim.disk_mib ?? 0 };
  if (!add.sandboxes && !add.disk && !claim.snapshot) return;
  const u = await store.tenantUsage(userId, HELD);
  if (add.sandboxes && u.sandboxes + add.sandboxes > cfg.maxSandboxesPerTenant)
    throw apiError("limit_sandboxes", { limit: cfg.maxSandboxesPerTenant });
  if (add.disk > 0 && u.disk_mib + add.disk > cfg.maxDiskMibPerTenant)
    throw apiError("limit_disk", { limit: cfg.maxDiskMibPerTenant, used: u.disk_mib, asked: add.disk });
  // A snapshot's size is known only once written, so new ones are refused once the limit is reached.
  if (claim.snapshot && u.snapshot_bytes >= cfg.maxSnapshotBytesPerTenant)
    throw apiError("limit_snapshot_bytes", { limit: cfg.maxSnapshotBytesPerTenant, used: u.snapshot_bytes });
}
