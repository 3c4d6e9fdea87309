import type net from "node:net";
import type {
  AddSSHPubkeysResponse,
  BandwidthView,
  CreateSandboxRequest,
  DestroyedResponse,
  DiskDetachedResponse,
  EgressView,
  ExecRequest,
  ExecResponse,
  ExecStreamFrame,
  ForkSandboxRequest,
  LifecycleResponse,
  OKResponse,
  ResizeSandboxResponse,
  SandboxDiskView,
  SandboxStatus,
  SandboxView,
} from "@createos-sandbox/protocol/api";
import { DEFAULT_WAIT_MS, resolveConfig } from "./config.js";
import { CreateosSandboxError, CreateosSandboxTimeoutError } from "./errors.js";
import { CreateosSandboxHttp, encodePath } from "./http.js";
import { pollUntil } from "./poll.js";
import { createSandboxView, getSandboxView } from "./sandbox-view.js";
import { shellSession } from "./shell.js";
import { assertValidPort, startTunnel } from "./tunnel.js";
import type {
  AttachDiskOptions,
  CreateSandboxOptions,
  CreateosSandboxClientOptions,
  DetachDiskOptions,
  ExecOptions,
  ExecStreamEvent,
  RequestOptions,
  ShellOptions,
  ShellSession,
  Tunnel,
  TunnelOptions,
  UpgradeOptions,
  WaitOptions,
} from "./types.js";
/** The Sandbox handle: one sandbox id plus its last-known view, with every per-sandbox operation. */
import type { BodyInit } from "./web-types.js";

const DEFAULT_PORT_READY_TIMEOUT_MS = 30_000;
const PORT_READY_BUFFER_MS = 5_000;
const DEFAULT_PORT_READY_INTERVAL_MS = 200;
// The host is interpolated into a bash command in the guest: allow only IP literals and DNS names.
const PORT_READY_HOST_RE = /^[A-Za-z0-9](?:[A-Za-z0-9.\-:]{0,253}[A-Za-z0-9])?$/;

function validPort(port: number): void {
  try {
    assertValidPort(port);
  } catch (err) {
    throw err instanceof CreateosSandboxError ? err : new CreateosSandboxError(String(err));
  }
}

function execBody(cmd: string, args: string[], options: ExecOptions, stream: boolean): ExecRequest {
  const body: ExecRequest = { cmd, args };
  if (options.stdin !== undefined) body.stdin = options.stdin;
  if (options.env !== undefined) body.env = options.env;
  if (stream) body.stream = true;
  return body;
}

function requestPart(options: ExecOptions): RequestOptions {
  const { stdin: _stdin, env: _env, ...rest } = options;
  return rest;
}

export class SandboxFiles {
  readonly #http: CreateosSandboxHttp;
  readonly #sandboxId: string;

  constructor(http: CreateosSandboxHttp, sandboxId: string) {
    this.#http = http;
    this.#sandboxId = sandboxId;
  }

  /** Writes raw bytes to an absolute guest path. Stream bodies are sent once (never retried). */
  async upload(path: string, data: BodyInit, options: RequestOptions = {}): Promise<void> {
    await this.#http.request("PUT", `/v1/sandboxes/${encodePath(this.#sandboxId)}/files`, {
      ...options,
      query: { path },
      rawBody: data,
      contentType: "application/octet-stream",
    });
  }

  async download(path: string, options: RequestOptions = {}): Promise<ArrayBuffer> {
    const url = `/v1/sandboxes/${encodePath(this.#sandboxId)}/files`;
    const response = await this.#http.requestRaw("GET", url, { ...options, query: { path } });
    if (!response.ok) await this.#http.throwForResponse(response, "GET", url);
    return response.arrayBuffer();
  }
}

export class Sandbox {
  readonly files: SandboxFiles;
  readonly #http: CreateosSandboxHttp;
  #data: SandboxView;

  constructor(http: CreateosSandboxHttp, view: SandboxView) {
    this.#http = http;
    this.#data = view;
    this.files = new SandboxFiles(http, view.id);
  }

  /** `new CreateosSandboxClient(options).createSandbox(request, options)` in one call. */
  static async create(
    request: CreateSandboxRequest,
    options: CreateosSandboxClientOptions & CreateSandboxOptions = {},
  ): Promise<Sandbox> {
    const http = new CreateosSandboxHttp(resolveConfig(options));
    return new Sandbox(http, await createSandboxView(http, request, pickRequestOptions(options)));
  }

  static async connect(
    id: string,
    options: CreateosSandboxClientOptions & RequestOptions = {},
  ): Promise<Sandbox> {
    const http = new CreateosSandboxHttp(resolveConfig(options));
    return new Sandbox(http, await getSandboxView(http, id, pickRequestOptions(options)));
  }

  get id(): string {
    return this.#data.id;
  }
  get status(): SandboxStatus {
    return this.#data.status;
  }
  get ip(): string | undefined {
    return this.#data.ip;
  }
  get name(): string | undefined {
    return this.#data.name;
  }
  /** The live cached view (not a copy): treat as read-only. */
  get data(): SandboxView {
    return this.#data;
  }
  toJSON(): SandboxView {
    return this.#data;
  }

  #path(suffix = ""): string {
    return `/v1/sandboxes/${encodePath(this.#data.id)}${suffix}`;
  }

  async refresh(options: RequestOptions = {}): Promise<this> {
    this.#data = await this.#http.request<SandboxView>("GET", this.#path(), options);
    return this;
  }

  async runCommand(cmd: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecResponse> {
    return this.#http.request<ExecResponse>("POST", this.#path("/exec"), {
      ...requestPart(options),
      body: execBody(cmd, args, options, false),
    });
  }

  /**
   * Streams the command's output. Cancel with `options.signal` or by leaving the loop: either
   * closes the connection, which the server takes as "kill the command".
   */
  async *streamCommand(
    cmd: string,
    args: string[] = [],
    options: ExecOptions = {},
  ): AsyncGenerator<ExecStreamEvent> {
    const frames = this.#http.stream<ExecStreamFrame>("POST", this.#path("/exec"), {
      ...requestPart(options),
      query: { stream: true },
      body: execBody(cmd, args, options, true),
    });
    for await (const frame of frames) {
      if (frame.hb) {
        yield { type: "heartbeat" };
        continue;
      }
      if (typeof frame.stdout === "string") yield { type: "stdout", data: frame.stdout };
      if (typeof frame.stderr === "string") yield { type: "stderr", data: frame.stderr };
      if (typeof frame.error === "string") yield { type: "error", message: frame.error };
      if (typeof frame.exit_code === "number") yield { type: "exit", exitCode: frame.exit_code };
    }
  }

  /** `bash -lc script`, throwing (with exit code, duration and output tails) on a non-zero exit. */
  async sh(script: string, options: ExecOptions & { label?: string } = {}): Promise<ExecResponse> {
    const { label, ...execOptions } = options;
    const response = await this.runCommand("bash", ["-lc", script], execOptions);
    const { result, exec_ms } = response;
    if (result.exit_code !== 0 || result.error) {
      const parts = [`${label ? `${label}: ` : ""}command exited ${result.exit_code} after ${exec_ms}ms`];
      if (result.error) parts.push(`error: ${result.error}`);
      if (result.stdout) parts.push(`stdout: ${result.stdout.slice(-2000)}`);
      if (result.stderr) parts.push(`stderr: ${result.stderr.slice(-2000)}`);
      throw new CreateosSandboxError(parts.join("\n"));
    }
    return response;
  }

  // Pause/resume may answer only {id,status} (202); merging keeps the rest of the cached view.
  async pause(options: RequestOptions = {}): Promise<this> {
    const view = await this.#http.request<LifecycleResponse>("POST", this.#path("/pause"), options);
    this.#data = { ...this.#data, ...view };
    return this;
  }

  async resume(options: RequestOptions = {}): Promise<this> {
    const view = await this.#http.request<LifecycleResponse>("POST", this.#path("/resume"), options);
    this.#data = { ...this.#data, ...view };
    return this;
  }

  async fork(request: ForkSandboxRequest = {}, options: RequestOptions = {}): Promise<Sandbox> {
    const view = await this.#http.request<SandboxView>("POST", this.#path("/fork"), {
      ...options,
      body: request,
    });
    return new Sandbox(this.#http, view);
  }

  async destroy(options: RequestOptions = {}): Promise<DestroyedResponse> {
    const result = await this.#http.request<DestroyedResponse>("DELETE", this.#path(), options);
    this.#data = { ...this.#data, status: result.status };
    return result;
  }

  async resize(diskMib: number, options: RequestOptions = {}): Promise<ResizeSandboxResponse> {
    const result = await this.#http.request<ResizeSandboxResponse>("POST", this.#path("/resize"), {
      ...options,
      body: { disk_mib: diskMib },
    });
    this.#data = { ...this.#data, disk_mib: result.disk_mib };
    return result;
  }

  /** PATCH answers the full view, whose `ingress_url_template` follows the new state. */
  async setIngress(enabled: boolean, options: RequestOptions = {}): Promise<this> {
    this.#data = await this.#http.request<SandboxView>("PATCH", this.#path(), {
      ...options,
      body: { ingress_enabled: enabled },
    });
    return this;
  }

  /** `null` disables auto-pause (a separate flag on the wire: omission means "unchanged"). */
  async setAutoPause(seconds: number | null, options: RequestOptions = {}): Promise<this> {
    const body = seconds === null ? { disable_auto_pause: true } : { auto_pause_after_seconds: seconds };
    this.#data = await this.#http.request<SandboxView>("PATCH", this.#path(), { ...options, body });
    return this;
  }

  addSSHPubkeys(keys: string[], options: RequestOptions = {}): Promise<AddSSHPubkeysResponse> {
    return this.#http.request("POST", this.#path("/ssh-pubkeys"), { ...options, body: { keys } });
  }

  async waitUntilRunning(options: WaitOptions = {}): Promise<this> {
    await this.#waitFor("running", ["error", "failed", "destroying", "destroyed"], options);
    return this;
  }

  async waitUntilPaused(options: WaitOptions = {}): Promise<this> {
    await this.#waitFor("paused", ["error", "failed", "destroying", "destroyed"], options);
    return this;
  }

  /** `destroying` is a step on the way, not a failure. */
  async waitUntilDestroyed(options: WaitOptions = {}): Promise<this> {
    await this.#waitFor("destroyed", ["error", "failed"], options);
    return this;
  }

  async #waitFor(target: SandboxStatus, bad: readonly SandboxStatus[], options: WaitOptions): Promise<void> {
    await pollUntil<SandboxView>({
      poll: async () => {
        const req: RequestOptions = { ...options.request };
        if (options.signal) req.signal = options.signal;
        await this.refresh(req);
        return this.#data;
      },
      done: (view) => view.status === target,
      failed: (view) =>
        bad.includes(view.status)
          ? `Sandbox ${view.id} entered terminal state "${view.status}" while waiting.`
          : undefined,
      timeoutMs: options.timeoutMs ?? DEFAULT_WAIT_MS,
      signal: options.signal,
    });
  }

  getEgress(options: RequestOptions = {}): Promise<EgressView> {
    return this.#http.request("GET", this.#path("/egress"), options);
  }

  setEgress(rules: string[] | null, options: RequestOptions = {}): Promise<EgressView> {
    return this.#http.request("PUT", this.#path("/egress"), { ...options, body: { egress: rules } });
  }

  getBandwidth(options: RequestOptions = {}): Promise<BandwidthView> {
    return this.#http.request("GET", this.#path("/bandwidth"), options);
  }

  rechargeBandwidth(addBytes: number, options: RequestOptions = {}): Promise<BandwidthView> {
    return this.#http.request("POST", this.#path("/bandwidth/recharge"), {
      ...options,
      body: { add_bytes: addBytes },
    });
  }

  attachNetwork(networkId: string, options: RequestOptions = {}): Promise<OKResponse> {
    return this.#http.request("POST", this.#path("/networks"), { ...options, body: { id: networkId } });
  }

  detachNetwork(networkId: string, options: RequestOptions = {}): Promise<OKResponse> {
    return this.#http.request("DELETE", this.#path(`/networks/${encodePath(networkId)}`), options);
  }

  listDisks(options: RequestOptions = {}): Promise<SandboxDiskView[]> {
    return this.#http.fetchAllPages("GET", this.#path("/disks"), options, { legacyKey: "disks" });
  }

  iterateDisks(options: RequestOptions = {}): AsyncGenerator<SandboxDiskView> {
    return this.#http.iteratePages("GET", this.#path("/disks"), options, { legacyKey: "disks" });
  }

  attachDisk(opts: AttachDiskOptions, options: RequestOptions = {}): Promise<OKResponse> {
    const body: { disk_id: string; mount_path: string; sub_path?: string } = {
      disk_id: opts.diskId,
      mount_path: opts.mountPath,
    };
    if (opts.subPath !== undefined) body.sub_path = opts.subPath;
    return this.#http.request("POST", this.#path("/disks"), { ...options, body });
  }

  detachDisk(opts: DetachDiskOptions, options: RequestOptions = {}): Promise<DiskDetachedResponse> {
    return this.#http.request("DELETE", this.#path(`/disks/${encodePath(opts.diskId)}`), {
      ...options,
      query: { mount_path: opts.mountPath },
    });
  }

  /** Polls a guest TCP port from inside the guest (bash `/dev/tcp` + GNU `timeout`). */
  async waitForPortReady(
    port: number,
    options: WaitOptions & { intervalMs?: number; host?: string } = {},
  ): Promise<this> {
    validPort(port);
    const host = options.host ?? "127.0.0.1";
    if (!PORT_READY_HOST_RE.test(host)) {
      throw new CreateosSandboxError(
        `Invalid host: ${JSON.stringify(host)}. Must be an IPv4/IPv6 literal or DNS hostname.`,
      );
    }
    const budgetMs = options.timeoutMs ?? DEFAULT_PORT_READY_TIMEOUT_MS;
    const timeoutSec = Math.max(1, Math.ceil(budgetMs / 1000));
    const sleepSec = (Math.max(50, options.intervalMs ?? DEFAULT_PORT_READY_INTERVAL_MS) / 1000).toFixed(3);
    const script = `timeout ${timeoutSec} bash -c 'until (echo > /dev/tcp/${host}/${port}) 2>/dev/null; do sleep ${sleepSec}; done'`;
    const execOptions: ExecOptions = { ...options.request, timeoutMs: budgetMs + PORT_READY_BUFFER_MS };
    if (options.signal) execOptions.signal = options.signal;
    const out = await this.runCommand("bash", ["-c", script], execOptions);
    if (out.result.exit_code !== 0) {
      throw new CreateosSandboxTimeoutError(
        `Port ${port} did not become ready on sandbox ${this.id} within ${timeoutSec}s.`,
      );
    }
    return this;
  }

  /** Public ingress URL for a port; throws when ingress is off for this sandbox. */
  previewUrl(port: number, options: { scheme?: "http" | "https" } = {}): string {
    validPort(port);
    const template = this.#data.ingress_url_template;
    if (!this.#data.ingress_enabled || !template) {
      throw new CreateosSandboxError(
        "No ingress URL is available. Create the sandbox with ingress_enabled: true.",
      );
    }
    const url = template.replace("<port>", String(port));
    return options.scheme === "http" ? url.replace(/^https:/, "http:") : url;
  }

  // ── additions over the published SDK ──────────────────────────────────────────────────────

  /** Interactive PTY (the CLI's keyless `sandbox shell`). */
  async shell(options: ShellOptions = {}): Promise<ShellSession> {
    const socket = await this.#http.upgrade(this.#path("/shell"), options);
    return shellSession(socket, options);
  }

  /**
   * One raw TCP connection to guest `127.0.0.1:port`, as a Duplex. Bytes the server sent with its
   * 101 are already in the read buffer. The caller owns the socket (listen for `error`).
   */
  async openTunnelSocket(port: number, options: UpgradeOptions = {}): Promise<net.Socket> {
    validPort(port);
    return this.#http.upgrade(this.#path(`/tunnel/${port}`), options);
  }

  /** Local listener forwarding each accepted connection to guest `remotePort` (the CLI's `tunnel`). */
  async tunnel(remotePort: number, options: TunnelOptions = {}): Promise<Tunnel> {
    validPort(remotePort);
    const upgradeOptions: UpgradeOptions = {};
    if (options.headers !== undefined) upgradeOptions.headers = options.headers;
    if (options.timeoutMs !== undefined) upgradeOptions.timeoutMs = options.timeoutMs;
    if (options.signal !== undefined) upgradeOptions.signal = options.signal;
    return startTunnel(() => this.openTunnelSocket(remotePort, upgradeOptions), options);
  }
}

// The flat option bag of Sandbox.create/connect configures the implicit client; the per-request
// fields also ride along on the call itself.
function pickRequestOptions(options: RequestOptions): RequestOptions {
  const out: RequestOptions = {};
  if (options.signal !== undefined) out.signal = options.signal;
  if (options.headers !== undefined) out.headers = options.headers;
  if (options.timeoutMs !== undefined) out.timeoutMs = options.timeoutMs;
  if (options.retry !== undefined) out.retry = options.retry;
  return out;
}
