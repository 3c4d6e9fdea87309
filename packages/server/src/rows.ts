/** New sandbox rows (a create's, a fork's child) and what a row asks the host daemon to run. */
import type { VmSpec } from "@createos-sandbox/protocol";
import { shapeById } from "./catalog.js";
import { defaultBandwidthQuota, remainingBytes } from "./netpolicy.js";
import type { SandboxRow } from "./store/types.js";

export interface CreateInput {
  shape: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  rootfs: string;
  name?: string;
  envs: Record<string, string>;
  egress: string[];
  ssh_pubkeys: string[];
  ingress_enabled: boolean;
  auto_pause_after_seconds?: number;
  network_ids: string[];
  /** Asked-for host; otherwise placement chooses. */
  host_id?: string;
}

export interface ForkInput {
  start_paused: boolean;
  envs?: Record<string, string>;
  egress?: string[];
  ssh_pubkeys?: string[];
  ingress_enabled?: boolean;
  bandwidth_quota_bytes?: number;
  /** Networks the child joins (a fork inherits none of the parent's). */
  network_ids?: string[];
}

/** What a child never inherits: the parent's runtime, snapshot and credentials. */
const NOT_INHERITED = [
  "ip",
  "spawn_ms",
  "running_at",
  "paused_at",
  "last_resumed_at",
  "destroyed_at",
  "snapshot",
  "pending_snapshot_id",
  "status_reason",
  "access_token_hash",
  "access_token_hint",
  "access_token_created_at",
  "access_token_rotated_at",
] as const;

export function childRow(
  parent: SandboxRow,
  input: ForkInput,
  ids: { id: string; name: string; snapshotId: string },
): SandboxRow {
  const child: SandboxRow = {
    ...parent,
    id: ids.id,
    name: ids.name,
    status: "forking",
    forked_from: parent.id,
    created_at: new Date().toISOString(),
    egress: input.egress ?? parent.egress,
    envs: input.envs ?? parent.envs,
    ssh_pubkeys: input.ssh_pubkeys ?? parent.ssh_pubkeys,
    ingress_enabled: input.ingress_enabled ?? parent.ingress_enabled,
    bandwidth_quota_bytes: input.bandwidth_quota_bytes ?? defaultBandwidthQuota(),
    bandwidth_used_bytes: 0,
    bandwidth_ingress_bytes: 0,
    last_activity_at: Date.now(),
  };
  for (const k of NOT_INHERITED) delete child[k];
  // A paused child's snapshot id is recorded with the row, before the host is asked to make it.
  if (input.start_paused) child.pending_snapshot_id = ids.snapshotId;
  return child;
}

export function createRow(
  input: CreateInput,
  ids: { id: string; userId: string; createdBy: string; name: string; hostId: string },
  region: string,
): SandboxRow {
  return {
    id: ids.id,
    user_id: ids.userId,
    name: ids.name,
    status: "creating",
    shape: input.shape,
    rootfs: input.rootfs,
    vcpu: input.vcpu,
    mem_mib: input.mem_mib,
    disk_mib: input.disk_mib,
    region,
    host_id: ids.hostId,
    created_at: new Date().toISOString(),
    created_by: ids.createdBy,
    ingress_enabled: input.ingress_enabled,
    egress: input.egress,
    envs: input.envs,
    ssh_pubkeys: input.ssh_pubkeys,
    bandwidth_quota_bytes: defaultBandwidthQuota(),
    bandwidth_used_bytes: 0,
    bandwidth_ingress_bytes: 0,
    last_activity_at: Date.now(),
    ...(input.auto_pause_after_seconds !== undefined
      ? { auto_pause_after_seconds: input.auto_pause_after_seconds }
      : {}),
  };
}

/** What the host daemon is asked to run for a row. */
export function vmSpec(row: SandboxRow): VmSpec {
  const spec: VmSpec = {
    sandbox_id: row.id,
    hostname: row.name,
    image: row.rootfs,
    vcpu: row.vcpu,
    mem_mib: row.mem_mib,
    disk_mib: row.disk_mib,
    envs: row.envs,
  };
  // Enforced by the host before the guest runs, on create, resume and fork alike.
  if (row.egress.length > 0) spec.egress = row.egress;
  // Metered: what is left of the quota (a fork's own ledger starts at zero), stopped at by the host.
  if (row.bandwidth_quota_bytes >= 0) spec.bandwidth_remaining_bytes = remainingBytes(row);
  // The host daemon caps the VM's CPU at this (its cgroup); without it, at one core per vCPU.
  const quota = shapeById(row.shape)?.cpu_quota_pct;
  if (quota !== undefined) spec.cpu_quota_pct = quota;
  return spec;
}
