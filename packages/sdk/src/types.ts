/**
 * Public types. Wire shapes come from `@createos-sandbox/protocol/api` (shared with the server so
 * both sides agree at compile time); the rest are SDK-only option and event types, named and shaped
 * as in `@nodeops-createos/sandbox@0.7.1` so code written against that package compiles here.
 */
import type { HeadersInit } from "./web-types.js";
export type {
  AccessTokenCreated,
  AccessTokenMeta,
  AddSSHPubkeysRequest,
  AddSSHPubkeysResponse,
  AttachNetworkRequest,
  BandwidthView,
  CreateSandboxRequest,
  CreateSandboxResponse,
  DestroyedResponse,
  DiskAttachment,
  DiskConfig,
  DiskCreateRequest,
  DiskCredentials,
  DiskDeletedResponse,
  DiskDetachedResponse,
  DiskKind,
  DiskMountStatus,
  DiskUpdateRequest,
  DiskView,
  EgressView,
  ErrorEnvelope,
  ExecRequest,
  ExecResponse,
  ExecResult,
  ExecStreamFrame,
  FailEnvelope,
  ForkRequest,
  ForkSandboxRequest,
  HealthzResponse,
  HostPublic,
  HostStatus,
  JSendEnvelope,
  LifecycleResponse,
  Network,
  NetworkCreateRequest,
  NetworkEntry,
  NetworkMember,
  OKResponse,
  Page,
  PageQuery,
  Pagination,
  PatchSandboxRequest,
  ProcessDetails,
  ReadyzResponse,
  RechargeBandwidthRequest,
  ResizeSandboxRequest,
  ResizeSandboxResponse,
  RootfsData,
  RootfsEntry,
  SandboxDiskView,
  SandboxStatus,
  SandboxView,
  SetEgressRequest,
  Shape,
  SuccessEnvelope,
  TemplateCreateRequest,
  TemplateLogEvent,
  TemplateStatus,
  TemplateView,
  WhoAmIStatsView,
  WhoAmIView,
} from "@createos-sandbox/protocol/api";

import type { SandboxStatus } from "@createos-sandbox/protocol/api";

/** Exponential-backoff retry policy. Omitted fields keep their defaults. */
export interface RetryOptions {
  /** Extra attempts after the first. Default 2. */
  maxRetries?: number;
  /** Base backoff in ms. Default 500. */
  baseDelayMs?: number;
  /** Ceiling for one backoff (and for an honoured Retry-After) in ms. Default 30000. */
  maxDelayMs?: number;
}

export type RetryReason = "network" | "status" | "rate-limit";

export interface RequestHookContext {
  /** URL with user-info stripped and credential query params redacted. */
  url: string;
  method: string;
  /** Outgoing headers with credentials replaced by `"redacted"`. */
  headers: Record<string, string>;
  /** 1 for the first try. */
  attempt: number;
}

export interface ResponseHookContext extends RequestHookContext {
  status: number;
  durationMs: number;
  requestId?: string | undefined;
}

export interface RetryHookContext extends Omit<ResponseHookContext, "status"> {
  /** Undefined when the retry follows a network error. */
  status?: number | undefined;
  reason: RetryReason;
  delayMs: number;
}

/** Observability hooks. Payloads are pre-redacted; a throwing hook is ignored. */
export interface ClientHooks {
  onRequest?: (ctx: RequestHookContext) => void | Promise<void>;
  onResponse?: (ctx: ResponseHookContext) => void | Promise<void>;
  onRetry?: (ctx: RetryHookContext) => void | Promise<void>;
}

export interface CreateosSandboxClientOptions {
  /** Sent as `X-Api-Key`. Falls back to `CREATEOS_SANDBOX_API_KEY`. */
  apiKey?: string;
  /** Auth headers used instead of an API key (e.g. `{"X-Access-Token": jwt}`). */
  authHeaders?: HeadersInit;
  /** Falls back to `CREATEOS_SANDBOX_BASE_URL`, then the production URL. */
  baseUrl?: string;
  fetch?: typeof fetch;
  /** Merged into every request. */
  headers?: HeadersInit;
  /** Per-request timeout (until response headers) in ms. Default 60000; 0 disables. */
  timeoutMs?: number;
  retry?: RetryOptions | false;
  userAgent?: string;
  hooks?: ClientHooks;
}

export interface RequestOptions {
  /** Cancels the request and any retry backoff. */
  signal?: AbortSignal;
  headers?: HeadersInit;
  /** Per-request timeout in ms (0 disables), overriding the client default. */
  timeoutMs?: number;
  retry?: RetryOptions | false;
}

export interface ListSandboxesOptions extends RequestOptions {
  /** Cap the number of handles returned. Omit to walk every page. */
  limit?: number;
  /** One lifecycle state. (The published SDK narrows this to four values; the server accepts all.) */
  status?: SandboxStatus;
}

export type ExecStreamEvent =
  | { type: "stdout"; data: string }
  | { type: "stderr"; data: string }
  | { type: "exit"; exitCode: number }
  | { type: "error"; message: string }
  | { type: "heartbeat" };

/**
 * Per-call options of `runCommand` / `streamCommand`. `stdin` and `env` are additions over the
 * published SDK (which never sent them); they are only put on the wire when set.
 */
export interface ExecOptions extends RequestOptions {
  /** Whole standard input of the command. */
  stdin?: string;
  /** Overrides of env keys declared at create time (the server rejects undeclared keys). */
  env?: Record<string, string>;
}

export interface GetTemplateOptions extends RequestOptions {
  include?: "dockerfile";
}

export interface TemplateLogsOptions extends RequestOptions {
  attempt?: number;
}

export interface AttachDiskOptions {
  /** `disk_<ulid>` id or disk name. */
  diskId: string;
  /** Absolute guest path. */
  mountPath: string;
  subPath?: string;
}

export interface DetachDiskOptions {
  /** The `disk_<ulid>` id. */
  diskId: string;
  mountPath: string;
}

export interface CreateSandboxOptions extends RequestOptions {
  /** @deprecated No effect: create answers only once the sandbox is running. */
  wait?: boolean;
  /** @deprecated No effect; bound the call with `timeoutMs`. */
  waitTimeoutMs?: number;
}

export interface WaitOptions {
  /** Wait budget in ms. Default 120000. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Per-request options for each poll. */
  request?: RequestOptions;
}

// ---------------------------------------------------------------------------------------------
// Additions: upgraded connections (shell, tunnel)

export interface UpgradeOptions {
  signal?: AbortSignal;
  headers?: HeadersInit;
  /** Budget for the handshake (connect + 101) in ms. Default: the client timeout. */
  timeoutMs?: number;
}

export interface ShellOptions extends UpgradeOptions {
  /** Initial terminal size; sent as the first frame. Default 24×80. */
  rows?: number;
  cols?: number;
  /** When given, its bytes are forwarded as keystrokes (the caller sets raw mode if it wants it). */
  stdin?: NodeJS.ReadableStream;
  /** When given, PTY output is written to it. */
  stdout?: NodeJS.WritableStream;
}

export interface ShellSession {
  /** Sends keystrokes (split into ≤4 KiB data frames). */
  write(data: string | Uint8Array): void;
  resize(rows: number, cols: number): void;
  /** Ends the session from our side. */
  close(): void;
  /** Subscribes to raw PTY output; returns an unsubscribe function. Output that arrived before the
   *  first subscriber is delivered to it. */
  onData(listener: (chunk: Buffer) => void): () => void;
  /** Settles when the connection is closed (by either side). */
  readonly closed: Promise<void>;
}

export interface TunnelOptions extends UpgradeOptions {
  /** Local port; default 0 (an ephemeral port, reported as `port`). */
  localPort?: number;
  /** Local address; default `127.0.0.1`. */
  bind?: string;
  /** Called when one forwarded connection fails (the listener keeps running). */
  onError?: (err: Error) => void;
}

export interface Tunnel {
  /** The local port actually bound. */
  readonly port: number;
  readonly host: string;
  /** Stops listening and drops every forwarded connection. */
  close(): Promise<void>;
}
