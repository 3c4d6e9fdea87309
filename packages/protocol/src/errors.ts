/**
 * The API error catalog: every error the control plane answers, one row per code.
 *
 * Routes never invent a status or a message: they throw `apiError(code, params)` and the catalog decides the
 * HTTP status, whether the body is a JSend `fail` (4xx, `data` = field→message) or `error` (5xx), and the
 * wording. `docs/errors.md` documents the same table; a test fails when the two drift.
 *
 * `field` names the key of the fail object. `message` is a template: `{name}` is replaced by `params.name`.
 * Codes are stable identifiers for logs, metrics and docs; they are not sent on the wire, because published
 * clients join every value of the fail object into the user-visible message.
 */
export interface ErrorSpec {
  status: number;
  /** Key of the JSend fail object. `*` = the caller supplies the field (validation errors). */
  field: string;
  message: string;
  /** Seconds for `Retry-After` (429/503). */
  retryAfter?: number;
}

export const ERROR_CATALOG = {
  validation: { status: 400, field: "*", message: "{message}" },
  malformed_json: { status: 400, field: "body", message: "malformed JSON: {detail}" },
  unsupported_content_type: {
    status: 400,
    field: "content-type",
    message: "expected application/json, got {type}",
  },
  bad_request_line: { status: 400, field: "request", message: "malformed HTTP request" },
  headers_too_large: { status: 400, field: "headers", message: "request headers too large" },
  upgrade_required: {
    status: 400,
    field: "upgrade",
    message: "this endpoint needs `Connection: Upgrade` and `Upgrade: tcp-tunnel` over HTTP/1.1",
  },
  websocket_required: {
    status: 400,
    field: "upgrade",
    message:
      "this endpoint needs a WebSocket handshake (`Upgrade: websocket`, `Sec-WebSocket-Version: 13`) over HTTP/1.1",
  },
  auth_missing: { status: 401, field: "auth", message: "missing api key" },
  auth_invalid: { status: 401, field: "auth", message: "invalid api key" },
  origin_not_allowed: {
    status: 403,
    field: "origin",
    message: "origin {origin} may not open a terminal here; use the console at this server's own address",
  },
  access_token_scope: {
    status: 403,
    field: "auth",
    message: "a sandbox access token may only drive runtime operations of its own sandbox",
  },
  metrics_forbidden: {
    status: 403,
    field: "auth",
    message: "/metrics needs the admin user's API key (or the operator's separate metrics address)",
  },
  limit_running: {
    status: 403,
    field: "limit",
    message: "running sandbox limit reached ({limit}); pause or destroy one first",
  },
  limit_sandboxes: {
    status: 403,
    field: "limit",
    message: "sandbox limit reached (limit_sandboxes = {limit}, paused ones included); destroy one first",
  },
  limit_disk: {
    status: 403,
    field: "limit",
    message: "disk limit reached (limit_disk = {limit} MiB per tenant, {used} MiB in use, {asked} MiB asked)",
  },
  limit_snapshot_bytes: {
    status: 403,
    field: "limit",
    message:
      "snapshot limit reached (limit_snapshot_bytes = {limit} bytes per tenant, {used} in use); destroy a paused sandbox first",
  },
  limit_networks: {
    status: 403,
    field: "limit",
    message: "network limit reached ({limit}); delete one first",
  },
  limit_network_members: {
    status: 403,
    field: "limit",
    message: "network {id} is full: its subnet {cidr} holds {limit} members; detach or destroy one first",
  },
  overlay_pool_exhausted: {
    status: 403,
    field: "limit",
    message: "every private-network subnet of this deployment ({pool}) is in use; delete a network first",
  },
  console_not_built: {
    status: 404,
    field: "console",
    message: "the web console is not built: run `npm run build -w packages/console`",
  },
  route_not_found: { status: 404, field: "route", message: "no route for {method} {path}" },
  sandbox_not_found: { status: 404, field: "sandbox", message: "sandbox {id} not found" },
  ingress_not_found: {
    status: 404,
    field: "host",
    message: "no sandbox serves {host}: the sandbox does not exist or its ingress is off",
  },
  network_not_found: { status: 404, field: "network", message: "network {id} not found" },
  disk_not_found: { status: 404, field: "disk", message: "disk {id} not found" },
  disk_not_attached: { status: 404, field: "disk", message: "disk {id} is not attached at {path}" },
  template_not_found: { status: 404, field: "template", message: "template {id} not found" },
  file_not_found: { status: 404, field: "path", message: "no such file: {path}" },
  access_token_not_found: { status: 404, field: "access_token", message: "sandbox {id} has no access token" },
  method_not_allowed: { status: 405, field: "method", message: "{method} is not allowed on {path}" },
  request_timeout: {
    status: 408,
    field: "request",
    message: "the request was not received in time",
  },
  state_conflict: { status: 409, field: "status", message: "cannot {action} a sandbox that is {status}" },
  sandbox_paused: {
    status: 409,
    field: "status",
    message: "cannot {action} a paused sandbox; resume it first (POST /v1/sandboxes/{id}/resume)",
  },
  transition_timeout: {
    status: 409,
    field: "status",
    message: "cannot {action} a sandbox that is still {status} after {seconds} s; retry later",
  },
  access_token_exists: {
    status: 409,
    field: "access_token",
    message: "sandbox {id} already has an access token; rotate or delete it",
  },
  network_in_use: {
    status: 409,
    field: "network",
    message:
      "network {id} still has {count} member(s) ({members}); detach them from it (createos sandbox network detach <sandbox> {id}) or destroy them, then delete it",
  },
  disk_in_use: {
    status: 409,
    field: "disk",
    message: "disk {id} is attached to {count} sandbox(es); detach it first",
  },
  mount_path_taken: {
    status: 409,
    field: "mount_path",
    message: "{path} is already a mount path of this sandbox",
  },
  // Registration checks the bucket with the given keys: each way it can fail has its own reason.
  disk_endpoint_unresolved: {
    status: 400,
    field: "config.endpoint",
    message: "cannot resolve the endpoint host {host}: {detail}",
  },
  disk_endpoint_unreachable: {
    status: 400,
    field: "config.endpoint",
    message: "cannot connect to the endpoint {endpoint}: {detail}",
  },
  // The host fetches the endpoint for guests: it may not be an address a guest could not reach (outbound.ts).
  disk_endpoint_refused: {
    status: 400,
    field: "config.endpoint",
    message:
      "the endpoint {host} is at {address}, {reason}: disks reach only public addresses and the private ranges the operator lists in CREATEOS_SANDBOX_PRIVATE_EGRESS",
  },
  disk_auth_failed: {
    status: 400,
    field: "credentials",
    message: "the endpoint refused these credentials for bucket {bucket}: {detail}",
  },
  disk_bucket_missing: { status: 400, field: "config.bucket", message: "no bucket {bucket} at {endpoint}" },
  disk_check_failed: {
    status: 400,
    field: "config",
    message: "the bucket check failed: HTTP {status} {detail}",
  },
  name_taken: {
    status: 400,
    field: "name",
    message: "a {kind} named {name} already exists",
  },
  body_too_large: { status: 413, field: "body", message: "request body exceeds {limit} bytes" },
  file_too_large: { status: 413, field: "body", message: "file exceeds the {limit}-byte transfer limit" },
  engine_too_large: { status: 413, field: "body", message: "{message}" },
  rate_limited: {
    status: 429,
    field: "rate",
    message: "rate limit exceeded: {rate} requests/s per tenant (burst {burst})",
    retryAfter: 1,
  },
  auth_rate_limited: {
    status: 429,
    field: "auth",
    message: "too many failed authentication attempts from this address; retry later",
    retryAfter: 1,
  },
  too_many_connections: {
    status: 429,
    field: "connections",
    message: "too many concurrent connections from this address (limit {limit}); retry later",
    retryAfter: 1,
  },
  tenant_streams_busy: {
    status: 429,
    field: "streams",
    message:
      "open stream limit reached ({limit} per tenant: execs, file transfers, shells, tunnels); retry later",
    retryAfter: 1,
  },
  tenant_exec_buffer_busy: {
    status: 429,
    field: "exec",
    message: "buffered exec limit reached ({limit} MiB in flight per tenant); retry later or use stream=true",
    retryAfter: 1,
  },
  template_builds_busy: {
    status: 429,
    field: "template",
    message: "concurrent template build limit reached ({limit} per user); retry when a build finishes",
    retryAfter: 30,
  },
  sandbox_busy: {
    status: 429,
    field: "sandbox",
    message: "the sandbox is busy: {reason}; retry later",
    retryAfter: 1,
  },
  internal: { status: 500, field: "", message: "internal error" },
  not_implemented: {
    status: 501,
    field: "",
    message: "{feature} is not available yet: it lands with the {issue} issue",
  },
  upstream_connect_failed: {
    status: 502,
    field: "",
    message: "could not connect to port {port} in the sandbox",
  },
  ingress_no_listener: {
    status: 502,
    field: "",
    message: "nothing is listening on port {port} in sandbox {id}",
  },
  host_unavailable: { status: 503, field: "", message: "no usable host: {reason}", retryAfter: 5 },
  host_capacity: { status: 503, field: "", message: "no host capacity: {reason}", retryAfter: 5 },
  // Permanent until the disks issue lands, yet clients retry every 503 after waiting Retry-After
  // (0.7.1 waits the full value): a long one would hang them instead of failing fast.
  disks_not_configured: {
    status: 503,
    field: "",
    message: "disks are not configured on this server: S3 disks land with the disks issue",
    retryAfter: 1,
  },
  agent_unreachable: {
    status: 503,
    field: "",
    message: "the sandbox's agent did not answer: {reason}",
    retryAfter: 2,
  },
  ingress_timeout: {
    status: 504,
    field: "",
    message: "sandbox {id} did not answer on port {port} within {seconds} s",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ApiErrorCode = keyof typeof ERROR_CATALOG;

/** An error a route throws; the HTTP layer renders it as JSend using the catalog row. */
export class ApiError extends Error {
  readonly status: number;
  readonly retryAfter: number | undefined;
  /** JSend `fail` data (4xx). */
  readonly data: Record<string, string> | undefined;

  constructor(
    readonly code: ApiErrorCode,
    params: Record<string, string | number> = {},
    /** Validation errors: field → message. */
    fields?: Record<string, string>,
  ) {
    const spec: ErrorSpec = ERROR_CATALOG[code];
    const message = renderTemplate(spec.message, params);
    super(message);
    this.name = "ApiError";
    this.status = spec.status;
    this.retryAfter = spec.retryAfter;
    if (spec.status < 500) {
      this.data = fields ?? { [spec.field]: message };
    }
  }
}

export function apiError(code: ApiErrorCode, params?: Record<string, string | number>): ApiError {
  return new ApiError(code, params);
}

/** A 400 naming each offending field. */
export function validationError(fields: Record<string, string>): ApiError {
  return new ApiError("validation", { message: Object.values(fields).join("; ") }, fields);
}

export function renderTemplate(template: string, params: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (whole, key: string) => {
    const v = params[key];
    return v === undefined ? whole : String(v);
  });
}
