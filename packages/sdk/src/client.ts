/** The entry point: transport configuration, catalog and identity calls, sandbox factory, sub-APIs. */
import type {
  CreateSandboxRequest,
  DiskCreateRequest,
  DiskCredentials,
  DiskDeletedResponse,
  DiskView,
  HealthzResponse,
  HostPublic,
  Network,
  NetworkCreateRequest,
  OKResponse,
  ReadyzResponse,
  RootfsData,
  SandboxView,
  Shape,
  TemplateCreateRequest,
  TemplateLogEvent,
  TemplateView,
  WhoAmIView,
} from "@createos-sandbox/protocol/api";
import { resolveConfig } from "./config.js";
import { errorFromResponse } from "./errors.js";
import { CreateosSandboxHttp, encodePath } from "./http.js";
import { createSandboxView, getSandboxView } from "./sandbox-view.js";
import { Sandbox } from "./sandbox.js";
import type {
  CreateSandboxOptions,
  CreateosSandboxClientOptions,
  GetTemplateOptions,
  ListSandboxesOptions,
  RequestOptions,
  TemplateLogsOptions,
} from "./types.js";

export class TemplatesApi {
  readonly #http: CreateosSandboxHttp;
  constructor(http: CreateosSandboxHttp) {
    this.#http = http;
  }
  list(options: RequestOptions = {}): Promise<TemplateView[]> {
    return this.#http.fetchAllPages("GET", "/v1/templates", options, { legacyKey: "templates" });
  }
  iterate(options: RequestOptions = {}): AsyncGenerator<TemplateView> {
    return this.#http.iteratePages("GET", "/v1/templates", options, { legacyKey: "templates" });
  }
  create(request: TemplateCreateRequest, options: RequestOptions = {}): Promise<TemplateView> {
    return this.#http.request("POST", "/v1/templates", { ...options, body: request });
  }
  get(id: string, options: GetTemplateOptions = {}): Promise<TemplateView> {
    const { include, ...rest } = options;
    return this.#http.request("GET", `/v1/templates/${encodePath(id)}`, { ...rest, query: { include } });
  }
  delete(id: string, options: RequestOptions = {}): Promise<OKResponse> {
    return this.#http.request("DELETE", `/v1/templates/${encodePath(id)}`, options);
  }
  /** The log so far, as plain text (not JSend). */
  async logs(id: string, options: TemplateLogsOptions = {}): Promise<string> {
    const { attempt, ...rest } = options;
    const path = `/v1/templates/${encodePath(id)}/logs`;
    const response = await this.#http.requestRaw("GET", path, { ...rest, query: { attempt } });
    if (!response.ok) await this.#http.throwForResponse(response, "GET", path);
    return response.text();
  }
  /** NDJSON frames until the `{final:true,status}` frame (or the stream ends). */
  followLogs(id: string, options: TemplateLogsOptions = {}): AsyncGenerator<TemplateLogEvent> {
    const { attempt, ...rest } = options;
    return this.#http.stream("GET", `/v1/templates/${encodePath(id)}/logs`, {
      ...rest,
      query: { attempt, follow: true },
    });
  }
}

export class NetworksApi {
  readonly #http: CreateosSandboxHttp;
  constructor(http: CreateosSandboxHttp) {
    this.#http = http;
  }
  list(options: RequestOptions = {}): Promise<Network[]> {
    return this.#http.fetchAllPages("GET", "/v1/networks", options, { legacyKey: "networks" });
  }
  iterate(options: RequestOptions = {}): AsyncGenerator<Network> {
    return this.#http.iteratePages("GET", "/v1/networks", options, { legacyKey: "networks" });
  }
  create(request: NetworkCreateRequest, options: RequestOptions = {}): Promise<Network> {
    return this.#http.request("POST", "/v1/networks", { ...options, body: request });
  }
  get(id: string, options: RequestOptions = {}): Promise<Network> {
    return this.#http.request("GET", `/v1/networks/${encodePath(id)}`, options);
  }
  delete(id: string, options: RequestOptions = {}): Promise<OKResponse> {
    return this.#http.request("DELETE", `/v1/networks/${encodePath(id)}`, options);
  }
}

export class DisksApi {
  readonly #http: CreateosSandboxHttp;
  constructor(http: CreateosSandboxHttp) {
    this.#http = http;
  }
  list(options: RequestOptions = {}): Promise<DiskView[]> {
    return this.#http.fetchAllPages("GET", "/v1/disks", options, { legacyKey: "disks" });
  }
  iterate(options: RequestOptions = {}): AsyncGenerator<DiskView> {
    return this.#http.iteratePages("GET", "/v1/disks", options, { legacyKey: "disks" });
  }
  create(request: DiskCreateRequest, options: RequestOptions = {}): Promise<DiskView> {
    return this.#http.request("POST", "/v1/disks", { ...options, body: request });
  }
  get(idOrName: string, options: RequestOptions = {}): Promise<DiskView> {
    return this.#http.request("GET", `/v1/disks/${encodePath(idOrName)}`, options);
  }
  delete(idOrName: string, options: RequestOptions = {}): Promise<DiskDeletedResponse> {
    return this.#http.request("DELETE", `/v1/disks/${encodePath(idOrName)}`, options);
  }
  rotateCredentials(
    idOrName: string,
    credentials: DiskCredentials,
    options: RequestOptions = {},
  ): Promise<DiskView> {
    return this.#http.request("PATCH", `/v1/disks/${encodePath(idOrName)}`, {
      ...options,
      body: { credentials },
    });
  }
}

export class CreateosSandboxClient {
  /** Low-level transport, for endpoints the SDK does not model. */
  readonly http: CreateosSandboxHttp;
  readonly templates: TemplatesApi;
  readonly networks: NetworksApi;
  readonly disks: DisksApi;

  constructor(options: CreateosSandboxClientOptions = {}) {
    this.http = new CreateosSandboxHttp(resolveConfig(options));
    this.templates = new TemplatesApi(this.http);
    this.networks = new NetworksApi(this.http);
    this.disks = new DisksApi(this.http);
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  healthz(options: RequestOptions = {}): Promise<HealthzResponse> {
    return this.http.request("GET", "/healthz", { ...options, auth: false });
  }

  /** `{ready:false, reason}` on 503 instead of throwing; never retried (it is a probe). */
  async readyz(options: RequestOptions = {}): Promise<ReadyzResponse> {
    const response = await this.http.requestRaw("GET", "/readyz", { ...options, auth: false, retry: false });
    const text = await response.text();
    let envelope: { status?: unknown; data?: unknown } | undefined;
    try {
      envelope = JSON.parse(text) as typeof envelope;
    } catch {
      envelope = undefined;
    }
    if (response.ok || response.status === 503) {
      if ((envelope?.status === "success" || envelope?.status === "fail") && envelope.data !== undefined) {
        const data = envelope.data;
        if (data && typeof data === "object") return data as ReadyzResponse;
      }
      return { ready: response.ok };
    }
    throw errorFromResponse(response, envelope, { endpoint: "/readyz", method: "GET" });
  }

  whoami(options: RequestOptions = {}): Promise<WhoAmIView> {
    return this.http.request("GET", "/v1/whoami", options);
  }

  listShapes(options: RequestOptions = {}): Promise<Shape[]> {
    return this.http.fetchAllPages("GET", "/v1/shapes", { ...options, auth: false }, { legacyKey: "shapes" });
  }

  listRootfs(options: RequestOptions = {}): Promise<RootfsData> {
    return this.http.request("GET", "/v1/rootfs", { ...options, auth: false });
  }

  listHosts(options: RequestOptions = {}): Promise<HostPublic[]> {
    return this.http.fetchAllPages("GET", "/v1/hosts", options, { legacyKey: "hosts" });
  }

  iterateHosts(options: RequestOptions = {}): AsyncGenerator<HostPublic> {
    return this.http.iteratePages("GET", "/v1/hosts", options, { legacyKey: "hosts" });
  }

  /** Creates a sandbox; the POST answers once the VM is running (see `createSandboxView`). */
  async createSandbox(request: CreateSandboxRequest, options: CreateSandboxOptions = {}): Promise<Sandbox> {
    return new Sandbox(this.http, await createSandboxView(this.http, request, options));
  }

  async getSandbox(id: string, options: RequestOptions = {}): Promise<Sandbox> {
    return new Sandbox(this.http, await getSandboxView(this.http, id, options));
  }

  async getSandboxByIP(ip: string, options: RequestOptions = {}): Promise<Sandbox> {
    const view = await this.http.request<SandboxView>(
      "GET",
      `/v1/sandboxes/by-ip/${encodePath(ip)}`,
      options,
    );
    return new Sandbox(this.http, view);
  }

  async listSandboxes(options: ListSandboxesOptions = {}): Promise<Sandbox[]> {
    const out: Sandbox[] = [];
    for await (const s of this.iterateSandboxes(options)) out.push(s);
    return out;
  }

  async *iterateSandboxes(options: ListSandboxesOptions = {}): AsyncGenerator<Sandbox> {
    const { limit, status, ...rest } = options;
    const views = this.http.iteratePages<SandboxView>(
      "GET",
      "/v1/sandboxes",
      { ...rest, query: { status } },
      limit !== undefined ? { cap: limit, legacyKey: "sandboxes" } : { legacyKey: "sandboxes" },
    );
    for await (const view of views) yield new Sandbox(this.http, view);
  }
}

export function createClient(options: CreateosSandboxClientOptions = {}): CreateosSandboxClient {
  return new CreateosSandboxClient(options);
}
