/**
 * The HTTP layer on plain `node:http`: a small segment router, JSend rendering, request ids, auth,
 * per-credential rate limits, body limits, request logs and metrics. Routes are plain async functions that
 * return `{status, data}` (rendered as JSend success) or write the response themselves (raw bytes, NDJSON).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { ApiError, apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "../config.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Principal, Store } from "../store/types.js";
import { ulid } from "../ulid.js";

export type AuthMode = "none" | "user" | "runtime";

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  reqId: string;
  method: string;
  path: string;
  query: URLSearchParams;
  params: Record<string, string>;
  principal?: Principal;
  /** Parsed JSON body for `body: "json"` routes (undefined when empty). */
  body?: unknown;
  /** Extra fields for the request log line. */
  logFields: Record<string, unknown>;
}

export interface Reply {
  status?: number;
  data: unknown;
  headers?: Record<string, string>;
}

export type Handler = (ctx: Ctx) => Promise<Reply | undefined>;

export interface Route {
  method: string;
  pattern: string;
  auth: AuthMode;
  body: "json" | "raw" | "none";
  handler: Handler;
}

export interface UpgradeCtx {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  reqId: string;
  params: Record<string, string>;
  principal: Principal;
  query: URLSearchParams;
}

export interface UpgradeRoute {
  pattern: string;
  handler: (ctx: UpgradeCtx) => Promise<void>;
}

interface Compiled<T> {
  segs: string[];
  def: T;
}

const REQ_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;
/** Request ids: a per-process random prefix and a counter — unique without a random draw per request. */
const REQ_PREFIX = `req_${ulid().slice(-8).toLowerCase()}`;
let reqCounter = 0;
/** Shared by requests without a query string; routes only read it. */
const EMPTY_QUERY = new URLSearchParams();
const nextReqId = () => `${REQ_PREFIX}${(++reqCounter).toString(36)}`;

function compile<T extends { pattern: string }>(defs: T[]): Compiled<T>[] {
  return defs.map((def) => ({ segs: def.pattern.split("/").slice(1), def }));
}

function match<T>(
  routes: Compiled<T>[],
  segs: string[],
): { hit: Compiled<T>; params: Record<string, string> }[] {
  const out: { hit: Compiled<T>; params: Record<string, string> }[] = [];
  outer: for (const r of routes) {
    if (r.segs.length !== segs.length) continue;
    const params: Record<string, string> = {};
    for (let i = 0; i < segs.length; i++) {
      const p = r.segs[i]!;
      if (p.startsWith(":")) params[p.slice(1)] = segs[i]!;
      else if (p !== segs[i]) continue outer;
    }
    out.push({ hit: r, params });
  }
  return out;
}

/** Per-credential token buckets. In memory: each replica limits on its own (documented in docs/server.md). */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {}

  /** Seconds to wait, or 0 when the request may pass. */
  take(key: string): number {
    if (this.rate <= 0) return 0;
    const now = performance.now() / 1000;
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
      if (this.buckets.size > 100_000) this.buckets.clear();
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.rate));
  }
}

export interface JSendOut {
  status: number;
  body: string;
  headers: Record<string, string>;
}

/** Renders any thrown value as a JSend envelope; unknown errors become a 500 without details. */
export function renderError(err: unknown): JSendOut & { internal: boolean } {
  const e = err instanceof ApiError ? err : apiError("internal");
  const headers: Record<string, string> = {};
  if (e.retryAfter !== undefined) headers["retry-after"] = String(e.retryAfter);
  const body =
    e.status < 500
      ? JSON.stringify({ status: "fail", data: e.data ?? null })
      : JSON.stringify({ status: "error", message: e.message, code: e.status });
  return { status: e.status, body, headers, internal: !(err instanceof ApiError) };
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

/** A complete HTTP/1.1 response written straight onto a socket (upgrade refusals, parser errors). */
export function rawResponse(socket: Duplex, out: JSendOut, reqId: string): void {
  if (socket.destroyed || !socket.writable) return;
  const head = [
    `HTTP/1.1 ${out.status} ${REASONS[out.status] ?? "Error"}`,
    "content-type: application/json; charset=utf-8",
    `content-length: ${Buffer.byteLength(out.body)}`,
    `x-request-id: ${reqId}`,
    "connection: close",
    ...Object.entries(out.headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${head.join("\r\n")}\r\n\r\n${out.body}`);
}

export interface CoreDeps {
  cfg: ServerConfig;
  store: Store;
  log: Logger;
  metrics: Metrics;
  limiter: RateLimiter;
  routes: Route[];
  upgrades: UpgradeRoute[];
}

export class HttpCore {
  private readonly routes: Compiled<Route>[];
  private readonly upgrades: Compiled<UpgradeRoute>[];
  /**
   * Successful lookups, kept `authCacheMs` (default 1 s): a database read per request costs more than the
   * rest of a GET. A key revoked from another process (`keys revoke`) is refused within that time.
   */
  private readonly authCache = new Map<string, { principal: Principal; until: number }>();

  constructor(private readonly d: CoreDeps) {
    this.routes = compile(d.routes);
    this.upgrades = compile(d.upgrades);
  }

  private reqId(req: IncomingMessage): string {
    const incoming = req.headers["x-request-id"];
    return typeof incoming === "string" && REQ_ID_RE.test(incoming) ? incoming : nextReqId();
  }

  /** Resolves the credential; X-Auth-Token and X-Access-Token are consulted before X-Api-Key (protocol.md §1.2). */
  async authenticate(req: IncomingMessage): Promise<Principal> {
    const h = req.headers;
    const secret = (h["x-auth-token"] ?? h["x-access-token"] ?? h["x-api-key"]) as string | undefined;
    if (secret === undefined || secret === "") throw apiError("auth_missing");
    if (secret.length > 512) throw apiError("auth_invalid");
    const now = performance.now();
    const hit = this.authCache.get(secret);
    if (hit && hit.until > now) return hit.principal;
    const p = await this.d.store.authenticate(secret);
    if (!p) throw apiError("auth_invalid");
    if (this.d.cfg.authCacheMs > 0) {
      if (this.authCache.size >= 10_000) this.authCache.clear();
      this.authCache.set(secret, { principal: p, until: now + this.d.cfg.authCacheMs });
    }
    return p;
  }

  /** Drops cached credentials at once (rotated or deleted access tokens); other changes wait out the TTL. */
  forget(match: (p: Principal) => boolean): void {
    for (const [k, v] of this.authCache) if (match(v.principal)) this.authCache.delete(k);
  }

  /** Credential check plus the per-credential token bucket. */
  private async admit(req: IncomingMessage): Promise<Principal> {
    const principal = await this.authenticate(req);
    const wait = this.d.limiter.take(principal.credential_id);
    if (wait > 0) {
      throw Object.assign(
        apiError("rate_limited", { rate: this.d.cfg.rateLimitPerSecond, burst: this.d.cfg.rateLimitBurst }),
        { retryAfter: wait },
      );
    }
    return principal;
  }

  private splitUrl(url: string): { path: string; query: URLSearchParams; segs: string[] } {
    const q = url.indexOf("?");
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? EMPTY_QUERY : new URLSearchParams(url.slice(q + 1));
    // Trailing slashes are tolerated like the clients strip them.
    const trimmed = path.length > 1 ? path.replace(/\/+$/, "") : path;
    try {
      const segs = trimmed
        .split("/")
        .slice(1)
        .map((s) => decodeURIComponent(s));
      return { path: trimmed, query, segs };
    } catch {
      throw apiError("bad_request_line");
    }
  }

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const t0 = performance.now();
    const reqId = this.reqId(req);
    const method = req.method ?? "GET";
    let routeName = "unmatched";
    const ctx: Ctx = {
      req,
      res,
      reqId,
      method,
      path: "",
      query: EMPTY_QUERY,
      params: {},
      logFields: {},
    };
    // "close" rather than "finish": requests whose client went away are logged and counted too.
    res.once("close", () => {
      const ms = performance.now() - t0;
      this.d.metrics.request(routeName, method, res.statusCode, ms / 1000);
      this.d.log.info("request", {
        req_id: reqId,
        method,
        route: routeName,
        path: ctx.path,
        status: res.statusCode,
        ms: Math.round(ms * 100) / 100,
        user_id: ctx.principal?.user_id,
        ...(res.writableFinished ? {} : { aborted: true }),
        ...ctx.logFields,
      });
    });
    const run = async () => {
      const split = this.splitUrl(req.url ?? "/");
      ctx.path = split.path;
      ctx.query = split.query;
      const hits = match(this.routes, split.segs);
      if (hits.length === 0) throw apiError("route_not_found", { method, path: split.path.slice(0, 200) });
      // Literal segments win over parameters (`/sandboxes/by-ip/x` vs `/sandboxes/:id/x`).
      const forMethod = hits
        .filter((h) => h.hit.def.method === method || (method === "HEAD" && h.hit.def.method === "GET"))
        .sort((a, b) => Object.keys(a.params).length - Object.keys(b.params).length);
      const chosen = forMethod[0];
      if (!chosen) {
        throw Object.assign(apiError("method_not_allowed", { method, path: hits[0]!.hit.def.pattern }), {
          allow: [...new Set(hits.map((h) => h.hit.def.method))].join(", "),
        });
      }
      const route = chosen.hit.def;
      routeName = route.pattern;
      ctx.params = chosen.params;
      if (route.auth !== "none") {
        ctx.principal = await this.admit(req);
        if (ctx.principal.sandbox_id && route.auth !== "runtime") throw apiError("access_token_scope");
      }
      if (route.body === "json") ctx.body = await this.readJson(req);
      const reply = await route.handler(ctx);
      if (reply && !res.headersSent)
        this.send(ctx, reply.status ?? 200, { status: "success", data: reply.data }, reply.headers);
    };
    run().catch((err) => this.fail(ctx, err));
  };

  private fail(ctx: Ctx, err: unknown): void {
    const out = renderError(err);
    if (out.internal) {
      this.d.log.error("unhandled error", { req_id: ctx.reqId, path: ctx.path, err });
    }
    const retry = (err as { retryAfter?: number }).retryAfter;
    if (retry !== undefined) out.headers["retry-after"] = String(retry);
    const allow = (err as { allow?: string }).allow;
    if (allow) out.headers.allow = allow;
    if (ctx.res.headersSent) {
      // A stream already started: the only honest signal left is to cut it.
      ctx.res.destroy();
      return;
    }
    const res = ctx.res;
    const unread = !ctx.req.complete;
    res.writeHead(out.status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(out.body),
      "x-request-id": ctx.reqId,
      // A body we refused unread (413, auth) would otherwise be parsed as the next request.
      ...(unread ? { connection: "close" } : {}),
      ...out.headers,
    });
    res.end(out.body);
  }

  send(ctx: Ctx, status: number, payload: unknown, headers?: Record<string, string>): void {
    const body = JSON.stringify(payload);
    ctx.res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      "x-request-id": ctx.reqId,
      ...headers,
    });
    ctx.res.end(ctx.method === "HEAD" ? undefined : body);
  }

  private readJson(req: IncomingMessage): Promise<unknown> {
    const limit = this.d.cfg.maxJsonBodyBytes;
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > limit) return Promise.reject(apiError("body_too_large", { limit }));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let n = 0;
      let failed = false;
      req.on("data", (c: Buffer) => {
        if (failed) return;
        n += c.length;
        if (n > limit) {
          failed = true;
          reject(apiError("body_too_large", { limit }));
          return;
        }
        chunks.push(c);
      });
      req.on("error", (e) => {
        failed = true;
        reject(e);
      });
      req.on("close", () => {
        if (!req.complete && !failed) {
          failed = true;
          reject(apiError("bad_request_line"));
        }
      });
      req.on("end", () => {
        if (failed) return;
        if (n === 0) return resolve(undefined);
        const ct = String(req.headers["content-type"] ?? "");
        if (!/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(ct)) {
          return reject(apiError("unsupported_content_type", { type: ct.slice(0, 100) || "none" }));
        }
        const text = Buffer.concat(chunks).toString("utf8");
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(apiError("malformed_json", { detail: (e as Error).message.slice(0, 200) }));
        }
      });
    });
  }

  /** `Connection: Upgrade` requests: only the shell and tunnel routes accept them. */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const t0 = performance.now();
    const reqId = this.reqId(req);
    let routeName = "upgrade:unmatched";
    let status = 101;
    socket.on("error", () => undefined);
    const refuse = (err: unknown) => {
      const out = renderError(err);
      status = out.status;
      if (out.internal) this.d.log.error("upgrade failed", { req_id: reqId, err });
      rawResponse(socket, out, reqId);
    };
    const run = async () => {
      const split = this.splitUrl(req.url ?? "/");
      const hit = match(this.upgrades, split.segs)[0];
      if (!hit)
        throw apiError("route_not_found", { method: req.method ?? "", path: split.path.slice(0, 200) });
      routeName = hit.hit.def.pattern;
      if (req.method !== "POST")
        throw apiError("method_not_allowed", { method: req.method ?? "", path: routeName });
      if (String(req.headers.upgrade ?? "").toLowerCase() !== "tcp-tunnel")
        throw apiError("upgrade_required");
      const principal = await this.admit(req);
      await hit.hit.def.handler({
        req,
        socket,
        head,
        reqId,
        params: hit.params,
        principal,
        query: split.query,
      });
    };
    run()
      .catch(refuse)
      .finally(() => {
        const ms = performance.now() - t0;
        this.d.metrics.request(routeName, "POST", status, ms / 1000);
        this.d.log.info("upgrade", {
          req_id: reqId,
          route: routeName,
          status,
          ms: Math.round(ms * 100) / 100,
        });
      });
  };

  /** Parser-level failures (bad request line, oversized headers) still get a JSend 400, never a bare 431. */
  handleClientError = (err: Error & { code?: string }, socket: Duplex): void => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const code = err.code === "HPE_HEADER_OVERFLOW" ? "headers_too_large" : "bad_request_line";
    rawResponse(socket, renderError(apiError(code)), nextReqId());
  };
}
