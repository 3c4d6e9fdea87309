/**
 * The slice of the SDK surface the CLI uses, loaded lazily so `--help`, `completion`, `login --help`
 * and usage errors never pay for (or depend on) the SDK and its HTTP stack.
 */
import type { Duplex } from "node:stream";

export type SandboxStatus =
  | "creating"
  | "running"
  | "pausing"
  | "paused"
  | "resuming"
  | "forking"
  | "error"
  | "destroying"
  | "destroyed"
  | "failed";

export interface SandboxView {
  id: string;
  status: SandboxStatus;
  ip?: string;
  vcpu: number;
  mem_mib: number;
  disk_mib: number;
  created_at: string;
  ingress_enabled: boolean;
  ingress_url_template?: string;
  name?: string;
  running_at?: string;
  destroyed_at?: string;
  spawn_ms?: number;
  shape?: string;
  rootfs?: string;
  region?: string;
  egress?: string[];
  envs?: string[];
  ssh_pubkeys?: string[];
  created_by?: string;
  bandwidth_ingress_bytes?: number;
  paused_at?: string;
  last_resumed_at?: string;
  forked_from?: string;
  auto_pause_after_seconds?: number;
}

export interface Shape {
  id: string;
  vcpu: number;
  mem_mib: number;
  default_disk_mib: number;
  cpu_quota_pct?: number;
}

export interface RootfsData {
  rootfs: string[];
  default: string;
  entries?: { name: string; description?: string; deprecated?: boolean; successor?: string }[];
}

export interface BandwidthView {
  id: string;
  quota_bytes: number;
  used_bytes: number;
  ingress_bytes: number;
  remaining_bytes: number;
  capped: boolean;
}

export interface EgressView {
  id: string;
  egress: string[];
}

export interface Network {
  id: string;
  name: string;
  created_at: string;
  member_count?: number;
  members?: { sandbox_id: string; status: string; ip?: string; name?: string }[];
}

export interface DiskView {
  id: string;
  name: string;
  kind: "s3";
  config: { bucket: string; endpoint: string; region?: string; use_path_style?: boolean };
  created_at: string;
}

export interface SandboxDiskView {
  disk_id: string;
  name: string;
  mount_path: string;
  sub_path?: string;
  mount_status: string;
  mount_error?: string;
}

export interface TemplateView {
  id: string;
  name: string;
  base: string;
  status: "pending" | "building" | "ready" | "failed";
  ext4_size_bytes: number;
  created_at: string;
  built_at?: string;
  dockerfile?: string;
}

export interface TemplateLogEvent {
  ts?: string;
  level?: string;
  line?: string;
  attempt?: number;
  final?: boolean;
  status?: string;
  [key: string]: unknown;
}

export interface CreateSandboxRequest {
  shape: string;
  rootfs?: string;
  name?: string;
  networks?: { id: string }[];
  disk_mib?: number;
  egress?: string[];
  envs?: Record<string, string>;
  ssh_pubkeys?: string[];
  ingress_enabled?: boolean;
  disks?: { disk_id: string; mount_path: string; sub_path?: string }[];
  auto_pause_after_seconds?: number;
}

export interface ForkSandboxRequest {
  start_paused?: boolean;
}

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  retry?: false | { maxRetries?: number };
}

export interface WaitOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HttpRequestOptions extends RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  rawBody?: unknown;
  contentType?: string;
  auth?: boolean;
}

export interface Http {
  readonly baseUrl: string;
  request<T>(method: string, path: string, options?: HttpRequestOptions): Promise<T>;
  requestRaw(method: string, path: string, options?: HttpRequestOptions): Promise<Response>;
  stream<T>(method: string, path: string, options?: HttpRequestOptions): AsyncGenerator<T>;
  throwForResponse(response: Response, method: string, requestPath?: string): Promise<never>;
}

export interface ShellSession {
  write(data: string | Uint8Array): void;
  resize(rows: number, cols: number): void;
  close(): void;
  onData(cb: (chunk: Uint8Array) => void): unknown;
  closed: Promise<unknown>;
}

export interface TunnelHandle {
  port: number;
  close(): unknown;
}

export interface Sandbox {
  readonly id: string;
  readonly status: SandboxStatus;
  readonly name: string | undefined;
  readonly data: SandboxView;
  readonly files: {
    upload(path: string, data: unknown, options?: RequestOptions): Promise<void>;
    download(path: string, options?: RequestOptions): Promise<ArrayBuffer>;
  };
  refresh(options?: RequestOptions): Promise<Sandbox>;
  pause(options?: RequestOptions): Promise<Sandbox>;
  resume(options?: RequestOptions): Promise<Sandbox>;
  fork(request?: ForkSandboxRequest, options?: RequestOptions): Promise<Sandbox>;
  destroy(options?: RequestOptions): Promise<{ id: string; status: string }>;
  setIngress(enabled: boolean, options?: RequestOptions): Promise<Sandbox>;
  setAutoPause(seconds: number | null, options?: RequestOptions): Promise<Sandbox>;
  addSSHPubkeys(keys: string[], options?: RequestOptions): Promise<{ count: number }>;
  getEgress(options?: RequestOptions): Promise<EgressView>;
  setEgress(rules: string[] | null, options?: RequestOptions): Promise<EgressView>;
  getBandwidth(options?: RequestOptions): Promise<BandwidthView>;
  rechargeBandwidth(addBytes: number, options?: RequestOptions): Promise<BandwidthView>;
  attachNetwork(networkId: string, options?: RequestOptions): Promise<{ ok: boolean }>;
  detachNetwork(networkId: string, options?: RequestOptions): Promise<{ ok: boolean }>;
  listDisks(options?: RequestOptions): Promise<SandboxDiskView[]>;
  attachDisk(
    opts: { diskId: string; mountPath: string; subPath?: string },
    options?: RequestOptions,
  ): Promise<unknown>;
  detachDisk(opts: { diskId: string; mountPath: string }, options?: RequestOptions): Promise<unknown>;
  waitUntilRunning(options?: WaitOptions): Promise<Sandbox>;
  waitUntilPaused(options?: WaitOptions): Promise<Sandbox>;
  shell(options?: { rows?: number; cols?: number }): Promise<ShellSession> | ShellSession;
  tunnel(
    remotePort: number,
    options?: { localPort?: number; bind?: string },
  ): Promise<TunnelHandle> | TunnelHandle;
  openTunnelSocket(port: number): Promise<Duplex>;
}

export interface Client {
  readonly http: Http;
  readonly baseUrl: string;
  readonly networks: {
    list(o?: RequestOptions): Promise<Network[]>;
    create(r: { name: string }, o?: RequestOptions): Promise<Network>;
    get(id: string, o?: RequestOptions): Promise<Network>;
    delete(id: string, o?: RequestOptions): Promise<unknown>;
  };
  readonly disks: {
    list(o?: RequestOptions): Promise<DiskView[]>;
    create(r: unknown, o?: RequestOptions): Promise<DiskView>;
    get(id: string, o?: RequestOptions): Promise<DiskView>;
    delete(id: string, o?: RequestOptions): Promise<unknown>;
  };
  readonly templates: {
    list(o?: RequestOptions): Promise<TemplateView[]>;
    create(r: { name: string; dockerfile: string; base?: string }, o?: RequestOptions): Promise<TemplateView>;
    get(id: string, o?: RequestOptions & { include?: "dockerfile" }): Promise<TemplateView>;
    delete(id: string, o?: RequestOptions): Promise<unknown>;
    logs(id: string, o?: RequestOptions): Promise<string>;
    followLogs(id: string, o?: RequestOptions): AsyncGenerator<TemplateLogEvent>;
  };
  whoami(o?: RequestOptions): Promise<{ user_id: string; stats: Record<string, number> }>;
  listShapes(o?: RequestOptions): Promise<Shape[]>;
  listRootfs(o?: RequestOptions): Promise<RootfsData>;
  createSandbox(request: CreateSandboxRequest, options?: RequestOptions): Promise<Sandbox>;
  getSandbox(id: string, options?: RequestOptions): Promise<Sandbox>;
  listSandboxes(options?: RequestOptions & { limit?: number; status?: string }): Promise<Sandbox[]>;
}

export interface ClientOptions {
  apiKey?: string;
  baseUrl?: string;
  timeoutMs?: number;
  hooks?: {
    onRequest?: (ctx: { url: string; method: string; attempt: number }) => void;
    onResponse?: (ctx: {
      url: string;
      method: string;
      status: number;
      durationMs: number;
      requestId?: string;
    }) => void;
    onRetry?: (ctx: {
      url: string;
      method: string;
      reason: string;
      delayMs: number;
      status?: number;
    }) => void;
  };
}

export interface SdkModule {
  CreateosSandboxClient: new (options: ClientOptions) => Client;
}

export async function loadSdk(): Promise<SdkModule> {
  // A computed specifier keeps tsc from resolving the workspace package at build time while the
  // SDK is being written; its runtime surface is checked by the e2e tests.
  const specifier = "@createos-sandbox/sdk";
  return (await import(specifier)) as SdkModule;
}
