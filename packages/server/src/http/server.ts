/**
 * The HTTP layer on Fastify: routes declared as tables (`route()` in routes/common.ts), admission (auth +
 * rate limit) as an onRequest hook, JSON bodies read by one content-type parser, schema validation by Ajv,
 * one error handler rendering every failure as JSend, request logs and metrics on each response's close.
 * Upgrade requests (`Upgrade: tcp-tunnel` to the shell and tunnel routes, `Upgrade: websocket` to shell-ws) go
 * through the same router, hooks and error handler (a ServerResponse bound to the upgraded socket) until the
 * handler accepts them.
 */
import { type IncomingMessage, type Server, ServerResponse, createServer } from "node:http";
import type { Duplex } from "node:stream";
import { type ApiError, apiError } from "@createos-sandbox/protocol";
import type { TSchema } from "@sinclair/typebox";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifySchema,
} from "fastify";
import type { ServerConfig } from "../config.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { compileSchema, orderedFailure } from "../schema.js";
import type { Principal, Store } from "../store/types.js";
import { ulid } from "../ulid.js";
import { Admission } from "./auth.js";
import { readJson } from "./body.js";
import {
  type UpgradeWatch,
  capConnections,
  clientAddress,
  lingerOnClose,
  overCap,
  serverOptions,
  timedOut,
  watchUpgrade,
} from "./conn.js";
import { rawResponse, renderError } from "./errors.js";

export type AuthMode = "none" | "user" | "runtime";
export type Query = Record<string, string | undefined>;

export interface Ctx {
  req: FastifyRequest;
  reply: FastifyReply;
  /** The raw response, for routes that stream (they call `reply.hijack()` before writing it). */
  res: ServerResponse;
  reqId: string;
  params: Record<string, string>;
  /** The first value of each query parameter. */
  query: Query;
  principal?: Principal | undefined;
  /** Parsed JSON body for `body: "json"` routes (undefined when empty). */
  body?: unknown;
  /** Extra fields for the request log line. */
  logFields: Record<string, unknown>;
}

/** The JSend `data`, or its JSON text already made (views.ts keeps the sandbox views' texts). */
export type Reply = { status?: number; headers?: Record<string, string> } & (
  | { data: unknown; json?: undefined }
  | { json: string; data?: undefined }
);

/** Returns a JSend success, or undefined once it has sent or hijacked the response itself. */
export type Handler = (ctx: Ctx) => Promise<Reply | undefined>;

export interface UpgradeCtx extends Ctx {
  socket: Duplex;
  head: Buffer;
  /**
   * Aborted when the client's socket closes — also while the handler still awaits the guest, which must
   * then undo what it opened instead of accepting.
   */
  signal: AbortSignal;
  principal: Principal;
  /**
   * Takes the socket over from HTTP and logs the request; writes the `tcp-tunnel` 101 (a WebSocket
   * route's library writes its own handshake).
   */
  accept(): Duplex;
}

export interface Route {
  method: string;
  pattern: string;
  auth: AuthMode;
  body: "json" | "raw" | "none";
  schema?: FastifySchema;
  /**
   * The checks of a body its schema cannot make (lookups, rules across fields), run also when the schema
   * failed, so that one 400 names every field as before: it adds failures to `errs` for fields that have
   * none yet, and the route answers 400 if there are any.
   */
  check?: (ctx: Ctx, errs: Record<string, string>) => void | Promise<void>;
  handler?: Handler;
  /** Set on the routes that answer an upgrade; a request that is not one is refused. */
  upgrade?: (u: UpgradeCtx) => Promise<void>;
  /** The `Upgrade:` token such a route takes (default `tcp-tunnel`). */
  upgradeProto?: "tcp-tunnel" | "websocket";
}

declare module "fastify" {
  interface FastifyRequest {
    principal?: Principal;
    logFields: Record<string, unknown>;
  }
  interface FastifyContextConfig {
    body?: Route["body"];
  }
}

const REQ_ID_RE = /^[A-Za-z0-9._:\-]{1,128}$/;
/** Request ids: a per-process random prefix and a counter — unique without a random draw per request. */
const REQ_PREFIX = `req_${ulid().slice(-8).toLowerCase()}`;
let reqCounter = 0;
const nextReqId = () => `${REQ_PREFIX}${(++reqCounter).toString(36)}`;
const genReqId = (req: IncomingMessage): string => {
  const incoming = req.headers["x-request-id"];
  return typeof incoming === "string" && REQ_ID_RE.test(incoming) ? incoming : nextReqId();
};

const UPGRADE = Symbol("upgrade");
/** How long a refused upgrade's socket may stay after the refusal was written. */
const REFUSED_UPGRADE_LINGER_MS = 2000;
type UpgradeReq = IncomingMessage & { [UPGRADE]?: { socket: Duplex; head: Buffer; watch: UpgradeWatch } };
/** The only paths that take upgrades; any other upgrade request is refused before routing. */
const UPGRADE_PATH = /^\/v1\/sandboxes\/[^/]+\/(shell|shell-ws|tunnel\/[^/]+)\/*(\?|$)/;

/** `?a=1&a=2&b` → `{a: "1", b: ""}`: the first value wins, as URLSearchParams.get reads it. */
function firstValues(qs: string): Query {
  const out: Query = Object.create(null);
  for (const [k, v] of new URLSearchParams(qs)) if (out[k] === undefined) out[k] = v;
  return out;
}

interface HttpDeps {
  cfg: ServerConfig;
  store: Store;
  log: Logger;
  metrics: Metrics;
  routes: Route[];
}

export async function createHttp(
  d: HttpDeps,
): Promise<{ fastify: FastifyInstance; server: Server; admission: Admission }> {
  const admission = new Admission(d.cfg, d.store);
  let server!: Server;
  const app = Fastify({
    serverFactory: (handler) => {
      server = createServer(serverOptions(d.cfg), handler);
      capConnections(server, d.cfg);
      return server;
    },
    genReqId,
    requestIdHeader: false,
    forceCloseConnections: true,
    return503OnClosing: false,
    routerOptions: {
      ignoreTrailingSlash: true,
      ignoreDuplicateSlashes: true,
      maxParamLength: 4096,
      querystringParser: firstValues,
    },
    frameworkErrors: (err, req, reply) => sendError(req, reply, err),
    clientErrorHandler: (err: Error & { code?: string }, socket: Duplex) => {
      if (err.code === "ECONNRESET" || !socket.writable) return void socket.destroy();
      if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") return timedOut(socket, nextReqId());
      const code = err.code === "HPE_HEADER_OVERFLOW" ? "headers_too_large" : "bad_request_line";
      rawResponse(socket, renderError(apiError(code)), nextReqId());
    },
  });
  app.setValidatorCompiler(({ schema, httpPart }) => compileSchema(schema as TSchema, httpPart ?? ""));

  const sendError = (req: FastifyRequest, reply: FastifyReply, err: unknown) => {
    const out = renderError(err);
    if (out.internal) d.log.error("unhandled error", { req_id: req.id, path: req.url.split("?")[0], err });
    // The host's own words (paths, command lines, addresses) stay here; the client got the catalog's.
    const detail = (err as { hostDetail?: string } | undefined)?.hostDetail;
    if (detail) d.log.warn("engine error", { req_id: req.id, status: out.status, detail });
    // A stream already started: the only honest signal left is to cut it.
    if (reply.raw.headersSent) return void reply.raw.destroy();
    reply.code(out.status).headers(out.headers).header("x-request-id", req.id);
    // A body we refused unread (413, auth): not read to its end on a kept connection, nor cut mid-send.
    if (!req.raw.complete) {
      reply.header("connection", "close");
      lingerOnClose(req.raw.socket);
    }
    reply.type("application/json; charset=utf-8").send(out.body);
  };
  app.setErrorHandler((err, req, reply) => sendError(req, reply, err));

  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", (req, payload, done) => {
    // Raw routes stream `req.raw` themselves; the others ignore a body they do not take.
    if (req.routeOptions.config.body !== "json") return done(null, undefined);
    readJson(payload, d.cfg.maxJsonBodyBytes, d.cfg.jsonBodyTimeoutMs).then((b) => done(null, b), done);
  });

  // A callback hook, not an async one: nothing here waits, and a promise per request is not free.
  app.addHook("onRequest", (req, reply, done) => {
    req.logFields = {};
    reply.header("x-request-id", req.id);
    observe(req, reply.raw, d);
    const refused = overCap(req.raw.socket);
    if (refused) reply.raw.shouldKeepAlive = false;
    done(refused);
  });

  for (const r of d.routes) register(app, r, admission);
  const allowed = allowTable(d.routes);
  app.setNotFoundHandler(async (req) => {
    const path = req.url.split("?")[0]!.replace(/\/+$/, "") || "/";
    const methods = allowed(path);
    if (methods.length === 0)
      throw apiError("route_not_found", { method: req.method, path: path.slice(0, 200) });
    throw Object.assign(apiError("method_not_allowed", { method: req.method, path: methods[0]!.pattern }), {
      allow: [...new Set(methods.map((m) => m.method))].join(", "),
    });
  });
  await app.ready();

  server.on("upgrade", (req: UpgradeReq, socket: Duplex, head: Buffer) => {
    socket.on("error", () => undefined);
    if (!UPGRADE_PATH.test(req.url ?? "")) {
      const path = (req.url ?? "/").split("?")[0]!.slice(0, 200);
      rawResponse(
        socket,
        renderError(apiError("route_not_found", { method: req.method ?? "", path })),
        genReqId(req),
      );
      return;
    }
    const watch = watchUpgrade(socket);
    req[UPGRADE] = { socket, head, watch };
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as never);
    // An upgrade answered with an HTTP response was refused (auth, 404, 429…): the bytes kept for the
    // handler go, and the socket — which no header or request deadline covers any more — is ended and,
    // whatever the client does, destroyed a moment later (it would be held open for as long as it likes).
    res.once("finish", () => {
      watch.take();
      socket.end();
      setTimeout(() => socket.destroy(), REFUSED_UPGRADE_LINGER_MS).unref();
    });
    app.routing(req, res);
  });
  return { fastify: app, server, admission };
}

function register(app: FastifyInstance, r: Route, admission: Admission): void {
  const auth = r.auth;
  app.route({
    method: r.method as "GET",
    url: r.pattern,
    config: { body: r.body },
    // Admission as the route's own hook (after the global one): its mode is known here, without reading
    // `req.routeOptions` (an object built anew at each read) on every request.
    ...(auth === "none"
      ? {}
      : {
          // A callback hook: a cached credential is admitted without a promise.
          onRequest: (req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
            const admitted = (p: Principal) => {
              req.principal = p;
              done(p.sandbox_id && auth !== "runtime" ? apiError("access_token_scope") : undefined);
            };
            try {
              const who = admission.admit(req.headers, clientAddress(req.raw.socket));
              if (who instanceof Promise) who.then(admitted, done);
              else admitted(who);
            } catch (e) {
              done(e as Error);
            }
          },
        }),
    ...(r.schema ? { schema: r.schema } : {}),
    ...(r.check ? { attachValidation: true } : {}),
    handler: async (req, reply) => {
      const ctx: Ctx = {
        req,
        reply,
        res: reply.raw,
        reqId: req.id,
        params: req.params as Record<string, string>,
        query: req.query as Query,
        body: req.body,
        logFields: req.logFields,
        principal: req.principal,
      };
      if (r.check) await runCheck(r, ctx, req.validationError as ApiError | undefined);
      const up = (req.raw as UpgradeReq)[UPGRADE];
      if (r.upgrade) {
        const proto = r.upgradeProto ?? "tcp-tunnel";
        if (!up || String(req.headers.upgrade ?? "").toLowerCase() !== proto)
          throw apiError(proto === "websocket" ? "websocket_required" : "upgrade_required");
        const own101 = proto === "tcp-tunnel";
        const u: UpgradeCtx = {
          ...ctx,
          socket: up.socket,
          head: up.head,
          signal: up.watch.signal,
          principal: req.principal!,
          accept: () => {
            u.head = Buffer.concat([up.head, up.watch.take()]);
            return accept(reply, up.socket, own101);
          },
        };
        await r.upgrade(u);
        // The client left before the handler accepted: it has undone its work; nothing is left to answer.
        if (up.watch.signal.aborted && !reply.sent) {
          reply.hijack();
          up.socket.destroy();
        }
        return reply;
      }
      const out = await r.handler!(ctx);
      if (out === undefined) return reply;
      if (out.status) reply.code(out.status);
      if (out.headers) reply.headers(out.headers);
      if (out.json === undefined) return { status: "success", data: out.data };
      // A string with a JSON content type is sent as it is.
      reply.type("application/json; charset=utf-8");
      return `{"status":"success","data":${out.json}}`;
    },
  });
}

async function runCheck(r: Route, ctx: Ctx, failed: ApiError | undefined): Promise<void> {
  const errs = { ...failed?.data };
  const b = ctx.body;
  if (typeof b !== "object" || b === null || Array.isArray(b)) ctx.body = {};
  await r.check!(ctx, errs);
  const props = (r.schema?.body as { properties?: object } | undefined)?.properties ?? {};
  if (Object.keys(errs).length > 0) throw orderedFailure(errs, Object.keys(props));
}

function accept(reply: FastifyReply, socket: Duplex, write101: boolean): Duplex {
  reply.hijack();
  reply.raw.statusCode = 101;
  if (write101)
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: tcp-tunnel\r\nx-request-id: ${reply.request.id}\r\n\r\n`,
    );
  (reply.raw as ServerResponse & { [DONE]?: () => void })[DONE]?.();
  return socket;
}

const DONE = Symbol("logged");

/**
 * Logs and counts the request once, on close — requests whose client went away are logged too — or at
 * the 101 of an upgrade.
 */
function observe(req: FastifyRequest, res: ServerResponse & { [DONE]?: () => void }, d: HttpDeps): void {
  const t0 = performance.now();
  const done = () => {
    if (res[DONE] !== done) return;
    res[DONE] = undefined;
    const ms = performance.now() - t0;
    const route = req.routeOptions.url ?? "unmatched";
    d.metrics.request(route, req.method, res.statusCode, ms / 1000);
    // Built in place, without spreads or a split: this runs on every request.
    const q = req.url.indexOf("?");
    let path = q === -1 ? req.url : req.url.slice(0, q);
    if (path.endsWith("/")) path = path.replace(/(.)\/+$/, "$1");
    const line: { msg: "request" } & Record<string, unknown> = {
      msg: "request",
      req_id: req.id,
      method: req.method,
      route,
      path,
      status: res.statusCode,
      ms: Math.round(ms * 100) / 100,
      user_id: req.principal?.user_id,
    };
    if (!res.writableFinished && res.statusCode !== 101) line.aborted = true;
    d.log.request(Object.assign(line, req.logFields));
  };
  res[DONE] = done;
  res.on("close", done);
}

/** Which routes a path names under some method, for 405 + Allow (literal segments before parameters). */
function allowTable(routes: Route[]): (path: string) => Route[] {
  const compiled = routes.map((r) => ({ r, segs: r.pattern.split("/").slice(1) }));
  return (path) => {
    let segs: string[];
    try {
      segs = path.split("/").slice(1).map(decodeURIComponent);
    } catch {
      return [];
    }
    return compiled
      .filter(
        (c) => c.segs.length === segs.length && c.segs.every((p, i) => p.startsWith(":") || p === segs[i]),
      )
      .map((c) => c.r);
  };
}
