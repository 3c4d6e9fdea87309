/**
 * Wire types of the public REST API (`/v1/...`), as the published clients see them
 * (docs: /work/shared/protocol.md §1–§2). The server builds its responses from these and the SDK
 * re-exports them, so a field added here is visible to both sides at compile time.
 *
 * Conventions the types encode:
 * - Optional fields are omitted on the wire (Go `omitempty` style), never `null`.
 * - Timestamps are RFC 3339 UTC strings; `*_mib` MiB, `*_bytes` bytes, `*_ms` milliseconds.
 * - Every JSON response is a JSend envelope; list routes wrap a {@link Page}.
 */

// ---------------------------------------------------------------------------------------------
// Envelopes and pagination

/** JSend success: the payload is in `data`. */
export interface SuccessEnvelope<T> {
  status: "success";
  data: T;
}

/**
 * JSend fail (4xx). `data` is a plain message, a field→message object (e.g. `{"shape":"unknown
 * shape"}`, optionally with a machine `code` string), or null.
 */
export interface FailEnvelope {
  status: "fail";
  data: Record<string, unknown> | string | null;
}

/** JSend error (5xx). `code` is the numeric HTTP status. */
export interface ErrorEnvelope {
  status: "error";
  message: string;
  code: number;
}

export type JSendEnvelope<T> = SuccessEnvelope<T> | FailEnvelope | ErrorEnvelope;

export interface Pagination {
  /** Matching items ignoring limit/offset. */
  total: number;
  /** Effective page size after server clamping (default 50, max 500). */
  limit: number;
  offset: number;
  /** Items in this page (≤ limit). */
  count: number;
}

/** `data` of every paginated list route (all lists except `/v1/rootfs`, processes, device networks). */
export interface Page<T> {
  data: T[];
  pagination: Pagination;
}

/** Query parameters accepted by every paginated list route. */
export interface PageQuery {
  limit?: number;
  offset?: number;
}

export const PAGE_DEFAULT_LIMIT = 50;
export const PAGE_MAX_LIMIT = 500;

// ---------------------------------------------------------------------------------------------
// Health, identity, catalog

export interface HealthzResponse {
  up: boolean;
}

/** `/readyz`: 200 when ready; 503 carries the same object with `ready:false`. */
export interface ReadyzResponse {
  ready: boolean;
  reason?: string;
  scheduler_last_ok_ms_ago?: number;
}

export interface WhoAmIStatsView {
  running: number;
  paused: number;
  other: number;
  /** Non-destroyed sandboxes. */
  total: number;
}

export interface WhoAmIView {
  user_id: string;
  stats: WhoAmIStatsView;
}

export interface Shape {
  id: string;
  vcpu: number;
  mem_mib: number;
  default_disk_mib: number;
  /** cgroup cpu.max as % of one CPU (25 = 0.25 vCPU); absent = uncapped. */
  cpu_quota_pct?: number;
}

export interface RootfsEntry {
  name: string;
  description?: string;
  deprecated?: boolean;
  successor?: string;
}

/** `GET /v1/rootfs` (not paginated). Disabled images are filtered out. */
export interface RootfsData {
  rootfs: string[];
  default: string;
  entries?: RootfsEntry[];
}

export type HostStatus = "active" | "draining" | "dead";

export interface HostPublic {
  id: string;
  status: HostStatus;
  free_mib: number;
  vm_count: number;
  rootfses?: string[];
  /** Ours, beyond 0.7.1: "kvm" or "tcg". */
  accel?: string;
  /** Ours: the host's memory, what running VMs hold of it, and its CPUs. */
  mem_total_mib?: number;
  promised_mib?: number;
  vcpus?: number;
  /** Ours: false while the control plane cannot reach the host daemon. */
  healthy?: boolean;
  /** Ours: why the host takes no new sandboxes right now. */
  not_ready_reason?: string;
}

// ---------------------------------------------------------------------------------------------
// Sandboxes

export const SANDBOX_STATUSES = [
  "creating",
  "running",
  "pausing",
  "paused",
  "resuming",
  "forking",
  "error",
  "destroying",
  "destroyed",
  "failed",
] as const;

/**
 * `error` = resume/fork exhausted its retries (POST /resume again); `failed` = terminal failure.
 * `destroyed` and `failed` are terminal.
 */
export type SandboxStatus = (typeof SANDBOX_STATUSES)[number];

export interface NetworkEntry {
  /** Network id or name. */
  id: string;
}

/** One element of `CreateSandboxRequest.disks` and the body of `POST /v1/sandboxes/{id}/disks`. */
export interface DiskAttachment {
  /** `disk_<ulid>` id or the user-scoped disk name. */
  disk_id: string;
  /** Absolute guest path. */
  mount_path: string;
  /** Bucket sub-folder; no leading `/`, no `..`. */
  sub_path?: string;
}

/** Body of `POST /v1/sandboxes`. Only `shape` is required. */
export interface CreateSandboxRequest {
  shape: string;
  /** Catalog name or template id/name; omitted = catalog default. */
  rootfs?: string;
  name?: string;
  networks?: NetworkEntry[];
  /** 0 = shape default. */
  disk_mib?: number;
  /** Egress allowlist; `[]`/`["*"]`/omitted = allow all. */
  egress?: string[];
  /** Exported into every exec; values are never echoed back. */
  envs?: Record<string, string>;
  ssh_pubkeys?: string[];
  host_id?: string;
  node_selector?: Record<string, string>;
  ingress_enabled?: boolean;
  disks?: DiskAttachment[];
  /** Must equal the server's region when set. */
  region?: string;
  /** 60–86400. */
  auto_pause_after_seconds?: number;
  /** Must be absent or 0 (the cluster default is stamped); non-zero → 400. */
  bandwidth_quota_bytes?: number;
}

/** `data` of `POST /v1/sandboxes` (answered only once the sandbox is `running`). */
export interface CreateSandboxResponse {
  id: string;
  name: string;
  ip: string;
  shape: string;
  rootfs: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  spawn_ms: number;
  egress: string[];
  /** −1 = unmetered. */
  bandwidth_quota_bytes: number;
  ingress_url_template?: string;
  auto_pause_after_seconds?: number;
  status?: SandboxStatus;
  /** Not in the published type; when present the SDK handle uses it instead of a local timestamp. */
  created_at?: string;
  /** Not in the published type; the SDK otherwise assumes the requested value. */
  ingress_enabled?: boolean;
}

export interface SandboxView {
  /** Ours, beyond 0.7.1: the host daemon the sandbox lives on (see GET /v1/hosts). */
  host_id?: string;
  id: string;
  status: SandboxStatus;
  /** Absent while `creating`. */
  ip?: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  created_at: string;
  ingress_enabled: boolean;
  /** Contains the literal `<port>`; present when ingress is on and a public domain is configured. */
  ingress_url_template?: string;
  name?: string;
  running_at?: string;
  destroyed_at?: string;
  spawn_ms?: number;
  shape?: string;
  rootfs?: string;
  region?: string;
  egress?: string[];
  /** Key names only. */
  envs?: string[];
  ssh_pubkeys?: string[];
  created_by?: string;
  bandwidth_ingress_bytes?: number;
  paused_at?: string;
  last_resumed_at?: string;
  forked_from?: string;
  /** Absent = auto-pause disabled. */
  auto_pause_after_seconds?: number;
  /** Ours, beyond 0.7.1: why the sandbox is `error`/`failed` (or was paused by the system). */
  status_reason?: string;
}

/** Query of `GET /v1/sandboxes`. */
export interface ListSandboxesQuery extends PageQuery {
  status?: SandboxStatus;
}

/** Body of `PATCH /v1/sandboxes/{id}`; omitted fields are unchanged. Answer: SandboxView. */
export interface PatchSandboxRequest {
  ingress_enabled?: boolean;
  /** 60–86400. */
  auto_pause_after_seconds?: number;
  /** Clears auto-pause (omitting `auto_pause_after_seconds` means "unchanged"). */
  disable_auto_pause?: boolean;
}

/** `data` of `DELETE /v1/sandboxes/{id}`. */
export interface DestroyedResponse {
  id: string;
  status: "destroying" | "destroyed";
}

/** `data` of pause/resume: a full SandboxView or at least `{id,status}` (202 + `X-Poll-After`). */
export type LifecycleResponse = SandboxView | { id: string; status: SandboxStatus };

/** Body of `POST /v1/sandboxes/{id}/fork`; omitted fields inherit. Answer: SandboxView of the child. */
export interface ForkRequest {
  start_paused?: boolean;
  ssh_pubkeys?: string[];
  egress?: string[];
  ingress_enabled?: boolean;
  envs?: Record<string, string>;
  bandwidth_quota_bytes?: number;
}

/** Published-SDK name of {@link ForkRequest}. */
export type ForkSandboxRequest = ForkRequest;

export interface ResizeSandboxRequest {
  /** Must exceed the current size. */
  disk_mib: number;
}

export interface ResizeSandboxResponse {
  id: string;
  disk_mib: number;
}

export interface AddSSHPubkeysRequest {
  keys: string[];
}

export interface AddSSHPubkeysResponse {
  /** Total keys after the append. */
  count: number;
}

/** Generic acknowledgement. */
export interface OKResponse {
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------
// Exec

/** Body of `POST /v1/sandboxes/{id}/exec[?stream=true]`. `cmd` is not run through a shell. */
export interface ExecRequest {
  cmd: string;
  args?: string[];
  /** Standard input, as a string. */
  stdin?: string;
  /** May only override keys declared at create (400 otherwise). */
  env?: Record<string, string>;
  /** Also set as `?stream=true`. */
  stream?: boolean;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
  /** Agent-level failure (could not start). */
  error?: string;
}

/** `data` of buffered exec. */
export interface ExecResponse {
  result: ExecResult;
  exec_ms: number;
}

/**
 * One NDJSON line of a streamed exec (`application/x-ndjson`). One meaningful key per frame;
 * `exit_code` is the last line; `hb` is sent every 5 s while quiet.
 */
export interface ExecStreamFrame {
  stdout?: string;
  stderr?: string;
  exit_code?: number;
  error?: string;
  hb?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Egress, bandwidth

export interface SetEgressRequest {
  /** `[]`, null, omitted or `["*"]` = allow all. */
  egress?: string[] | null;
}

export interface EgressView {
  id: string;
  egress: string[];
}

export interface BandwidthView {
  id: string;
  /** −1 = unmetered. */
  quota_bytes: number;
  /** Egress bytes (billed). */
  used_bytes: number;
  /** Observed only. */
  ingress_bytes: number;
  /** May go negative. */
  remaining_bytes: number;
  capped: boolean;
}

export interface RechargeBandwidthRequest {
  add_bytes: number;
}

// ---------------------------------------------------------------------------------------------
// Access tokens (per-sandbox delegated key, sent as X-Api-Key)

export interface AccessTokenCreated {
  token: string;
  enabled: boolean;
  created_at: string;
  rotated_at?: string;
}

export interface AccessTokenMeta {
  enabled: boolean;
  token_hint?: string;
  created_at?: string;
  rotated_at?: string;
}

// ---------------------------------------------------------------------------------------------
// Networks

export interface NetworkCreateRequest {
  name: string;
}

export interface NetworkMember {
  sandbox_id: string;
  status: string;
  ip?: string;
  name?: string;
}

export interface Network {
  id: string;
  name: string;
  created_at: string;
  /** On list responses. */
  member_count?: number;
  /** On detail GET. */
  members?: NetworkMember[];
}

/** Body of `POST /v1/sandboxes/{id}/networks`. */
export interface AttachNetworkRequest {
  /** Network id or name. */
  id: string;
}

// ---------------------------------------------------------------------------------------------
// Disks

export type DiskKind = "s3";

export interface DiskConfig {
  bucket: string;
  endpoint: string;
  region?: string;
  use_path_style?: boolean;
}

export interface DiskCredentials {
  access_key: string;
  secret_key: string;
}

export interface DiskCreateRequest {
  /** `^[a-z0-9][a-z0-9-]{0,62}$`. */
  name: string;
  kind: DiskKind;
  config: DiskConfig;
  credentials: DiskCredentials;
}

export interface DiskUpdateRequest {
  credentials: DiskCredentials;
}

/** Credentials are never returned. */
export interface DiskView {
  id: string;
  name: string;
  kind: DiskKind;
  config: DiskConfig;
  created_at: string;
}

export type DiskMountStatus = "pending" | "mounted" | "error" | "unmounting";

export interface SandboxDiskView {
  disk_id: string;
  name: string;
  kind: DiskKind;
  config: DiskConfig;
  mount_path: string;
  sub_path?: string;
  mount_status: DiskMountStatus;
  mount_error?: string;
}

export interface DiskDeletedResponse {
  deleted: boolean;
}

export interface DiskDetachedResponse {
  detached: boolean;
}

// ---------------------------------------------------------------------------------------------
// Templates

export interface TemplateCreateRequest {
  /** 1–63 chars, `[a-z0-9-]`. */
  name: string;
  dockerfile: string;
  /** `nodeops/sandbox:debian` | `nodeops/sandbox:alpine`. */
  base?: string;
}

export type TemplateStatus = "pending" | "building" | "ready" | "failed";

export interface TemplateView {
  id: string;
  name: string;
  base: string;
  status: TemplateStatus;
  /** 0 until built. */
  ext4_size_bytes: number;
  created_at: string;
  built_at?: string;
  /** Only with `?include=dockerfile`. */
  dockerfile?: string;
}

/** One NDJSON line of `GET /v1/templates/{ref}/logs?follow=true`. */
export interface TemplateLogEvent {
  ts?: string;
  level?: string;
  line?: string;
  attempt?: number;
  /** Terminal frame: `{final:true, status:"ready"|"failed"|"cancelled"}`. */
  final?: boolean;
  status?: string;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Managed processes (§2.4)

export type ProcessKind = "process" | "pty";
export type ProcessState = "starting" | "running" | "terminating" | "exited" | "failed";

export interface ProcessDetails {
  process_id: string;
  kind: ProcessKind;
  pid: number;
  state: ProcessState;
  leader_exited: boolean;
  tree_exited: boolean;
  created_at: string;
  finished_at?: string;
  exit_code?: number;
  signal?: string;
  cmd?: string;
  args?: string[];
  cwd?: string;
  foreground?: { pid: number; cmd: string; args?: string[] };
  output: { oldest_seq: number; newest_seq: number; bytes: number };
}

export interface StartProcessRequest {
  cmd?: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string>;
  pty?: { rows: number; cols: number };
}

// ---------------------------------------------------------------------------------------------
// Upgrade endpoints (§3.4, §3.6)

/** Value of the `Upgrade` header on `POST …/shell` and `POST …/tunnel/{port}`. */
export const TCP_TUNNEL_UPGRADE = "tcp-tunnel";

/** Client→server frame types on the shell connection: `[type:1][len:4 BE][payload]`. */
export const SHELL_FRAME_DATA = 0x00;
/** Payload: rows u16 BE, cols u16 BE. */
export const SHELL_FRAME_RESIZE = 0x01;
/** Max payload of one data frame. */
export const SHELL_MAX_DATA_FRAME = 4096;
