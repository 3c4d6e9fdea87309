import type { SnapshotRef } from "@createos-sandbox/protocol";
import type { api } from "@createos-sandbox/protocol";

export type SandboxStatus = api.SandboxStatus;

export interface UserRow {
  id: string;
  name: string;
  created_at: string;
}

export interface ApiKeyRow {
  id: string;
  user_id: string;
  /** First characters of the key, shown by `users list` and accepted by `keys revoke`. */
  prefix: string;
  created_at: string;
  revoked_at?: string;
}

/** Everything the control plane knows about a sandbox; the API view is derived from it. */
export interface SandboxRow {
  id: string;
  user_id: string;
  name: string;
  status: SandboxStatus;
  shape: string;
  rootfs: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  region: string;
  ip?: string;
  host_id?: string;
  spawn_ms?: number;
  created_at: string;
  created_by?: string;
  running_at?: string;
  paused_at?: string;
  last_resumed_at?: string;
  destroyed_at?: string;
  forked_from?: string;
  auto_pause_after_seconds?: number;
  ingress_enabled: boolean;
  egress: string[];
  /** Secret values: needed to respawn the VM on resume/fork, never returned by the API. */
  envs: Record<string, string>;
  ssh_pubkeys: string[];
  snapshot?: SnapshotRef;
  /**
   * The snapshot a pause (or a `start_paused` fork) is making: the control plane's id, recorded with the
   * transition before the host daemon is asked, so the host call can be repeated by it after a crash.
   */
  pending_snapshot_id?: string;
  bandwidth_quota_bytes: number;
  bandwidth_used_bytes: number;
  bandwidth_ingress_bytes: number;
  /** Epoch ms of the last exec/shell/tunnel/file activity (auto-pause idle clock). */
  last_activity_at: number;
  /** Why the row is in `error`/`failed`, or why it was paused by the system. */
  status_reason?: string;
  access_token_hash?: string;
  access_token_hint?: string;
  access_token_created_at?: string;
  access_token_rotated_at?: string;
}

export interface TenantUsage {
  sandboxes: number;
  disk_mib: number;
  snapshot_bytes: number;
}

export type SandboxPatch = Partial<Omit<SandboxRow, "id" | "user_id" | "created_at">> & {
  /** Columns to clear (stored as NULL). */
  clear?: (keyof SandboxRow)[];
};

export interface NetworkRow {
  id: string;
  user_id: string;
  name: string;
  created_at: string;
  /** Its VXLAN VNI and /24 of the overlay pool (store/networks.ts), held until it is deleted. */
  vni?: number;
  cidr?: string;
}

export interface Page<T> {
  rows: T[];
  total: number;
}

export interface PageQuery {
  limit: number;
  offset: number;
}

/** Who a credential belongs to. */
export interface Principal {
  user_id: string;
  /** The key or token row id (rate limits are per credential). */
  credential_id: string;
  /** Set when the credential is a sandbox access token: it may only drive this sandbox. */
  sandbox_id?: string;
}

/**
 * The whole persistence surface. Async so a PostgreSQL implementation can sit behind it; the SQLite one
 * answers synchronously inside the promise. Anything a second replica would need lives here, not in memory.
 */
export interface Store {
  close(): Promise<void>;

  createUser(name: string): Promise<UserRow>;
  getUserByName(name: string): Promise<UserRow | undefined>;
  listUsers(): Promise<(UserRow & { keys: ApiKeyRow[] })[]>;
  /** Stores only the hash of `key`. */
  addApiKey(userId: string, key: string): Promise<ApiKeyRow>;
  /** Revoke by key id, the whole key or a prefix of it (≥ 8 chars); an ambiguous prefix revokes nothing. */
  revokeKeys(prefixOrId: string): Promise<{ revoked: ApiKeyRow[]; ambiguous: ApiKeyRow[] }>;
  /** Resolves an API key or a sandbox access token to its principal. */
  authenticate(secret: string): Promise<Principal | undefined>;

  insertSandbox(row: SandboxRow): Promise<void>;
  getSandbox(id: string): Promise<SandboxRow | undefined>;
  getSandboxByIp(userId: string, ip: string): Promise<SandboxRow | undefined>;
  listSandboxes(userId: string, q: PageQuery & { status?: SandboxStatus }): Promise<Page<SandboxRow>>;
  /** All rows in these statuses, any tenant (reconcile, scheduler). */
  sandboxesInStatus(statuses: SandboxStatus[]): Promise<SandboxRow[]>;
  countSandboxes(userId: string, statuses: SandboxStatus[]): Promise<number>;
  statusCounts(userId?: string): Promise<Record<string, number>>;
  /** What a tenant's sandboxes in these statuses hold: their count, `disk_mib` and snapshot bytes. */
  tenantUsage(userId: string, statuses: readonly SandboxStatus[]): Promise<TenantUsage>;
  nameInUse(userId: string, name: string): Promise<boolean>;
  updateSandbox(id: string, patch: SandboxPatch): Promise<void>;
  /**
   * Compare-and-set on status: applies `patch` only when the row's status is one of `from`.
   * Returns whether it applied. Every lifecycle step goes through this, so two requests (or two
   * replicas) racing on one sandbox cannot both win.
   */
  transition(id: string, from: SandboxStatus[], patch: SandboxPatch): Promise<boolean>;
  touchActivity(id: string, atMs: number): Promise<void>;
  /** Running sandboxes whose idle clock passed their auto-pause timeout. */
  idleSandboxes(nowMs: number): Promise<SandboxRow[]>;
}
