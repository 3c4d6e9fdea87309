/**
 * A host daemon on the network: any `HostDaemon` (the local QEMU one in production, a scripted one in
 * tests) served over HTTP/1.1 as HOSTD-PROTOCOL.md describes, behind a bearer token. Nothing here knows
 * about VMs; it only translates exchanges into interface calls and back.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { chmod, rm } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { Socket } from "node:net";
import {
  DATA_CHUNK,
  HOSTD_CALLS,
  HOSTD_ERROR_STATUS,
  HOSTD_REQUEST_HEADER,
  HOSTD_ROUTES,
  HOSTD_UPGRADE,
  type HostDaemon,
  type HostdCall,
  HostdError,
  rechunk,
  toWireError,
} from "@createos-sandbox/protocol";
import { serveStream } from "./streams.js";

export interface ServeOptions {
  token: string;
  /** PEM certificate and key: serve HTTPS instead of HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  log?: { warn(msg: string, f?: Record<string, unknown>): void };
}

/** Heartbeat on long answers, so the client's idle timer tells a slow create from a dead host. */
export const HEARTBEAT_MS = 5_000;

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time token check: comparing digests keeps the length of the token out of the timing too. */
export function tokenChecker(token: string): (header: string | undefined) => boolean {
  if (token.length < 16)
    throw new HostdError("bad_request", "the host daemon token must be at least 16 characters");
  const want = digest(token);
  return (header) => {
    const m = /^Bearer (.+)$/.exec(header ?? "");
    return timingSafeEqual(digest(m?.[1] ?? ""), want) && m !== null;
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage, limit = 1 << 20): Promise<unknown> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > limit) throw new HostdError("too_large", `request body over ${limit} bytes`);
    parts.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new HostdError("bad_request", "request body is not JSON");
  }
}

/** A 200 that heartbeats with blank space until `work` settles, then ends with `{result}` or `{error}`. */
async function answerLong(res: ServerResponse, work: () => Promise<unknown>): Promise<void> {
  res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
  const hb = setInterval(() => res.write(" "), HEARTBEAT_MS);
  try {
    const result = await work();
    res.end(JSON.stringify(result === undefined ? { result: null } : { result }));
  } catch (e) {
    res.end(JSON.stringify(toWireError(e)));
  } finally {
    clearInterval(hb);
  }
}

export function createHostdServer(daemon: HostDaemon, opts: ServeOptions): Server {
  const authorized = tokenChecker(opts.token);
  const calls = new Set<string>(HOSTD_CALLS);

  const files = async (req: IncomingMessage, res: ServerResponse, q: URLSearchParams) => {
    const id = q.get("sandbox_id") ?? "";
    const path = q.get("path") ?? "";
    if (req.method === "GET") {
      const { stat, body } = await daemon.readFile(id, path);
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        "x-file-size": String(stat.size),
        "x-file-mode": String(stat.mode),
      });
      body.once("error", () => res.destroy());
      res.once("close", () => body.destroy());
      body.pipe(res);
      return;
    }
    if (req.method === "PUT") {
      const mode = q.has("mode") ? Number(q.get("mode")) : undefined;
      if (mode !== undefined && !(Number.isInteger(mode) && mode >= 0 && mode <= 0o7777))
        throw new HostdError("bad_request", `mode must be 0-07777, got ${q.get("mode")}`);
      // The daemon gets its own stream: one that stops reading early (too large) may destroy it, which
      // must not destroy the connection before our answer is written.
      const body = rechunk(DATA_CHUNK);
      req.pipe(body);
      const r = await daemon.writeFile(id, path, body, mode).finally(() => req.unpipe(body));
      json(res, 200, { result: r });
      return;
    }
    throw new HostdError("bad_request", `${req.method} is not allowed on ${HOSTD_ROUTES.files}`);
  };

  const events = (res: ServerResponse) => {
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    res.write("\n");
    const off = daemon.onEvent((event) => res.write(`${JSON.stringify({ event })}\n`));
    const hb = setInterval(() => res.write("\n"), HEARTBEAT_MS);
    res.once("close", () => {
      clearInterval(hb);
      off();
    });
  };

  const ensureImage = async (req: IncomingMessage, res: ServerResponse) => {
    const { name } = (await readJson(req)) as { name?: unknown };
    if (typeof name !== "string") throw new HostdError("bad_request", "ensureImage needs {name}");
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    const hb = setInterval(() => res.write("\n"), HEARTBEAT_MS);
    try {
      await daemon.ensureImage(name, (progress) => res.write(`${JSON.stringify({ progress })}\n`));
      res.end(`${JSON.stringify({ done: true })}\n`);
    } catch (e) {
      res.end(`${JSON.stringify(toWireError(e))}\n`);
    } finally {
      clearInterval(hb);
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (!authorized(req.headers.authorization)) {
      req.resume();
      return json(res, 401, { error: { code: "unauthorized", message: "missing or wrong bearer token" } });
    }
    const url = new URL(req.url ?? "/", "http://hostd");
    try {
      if (url.pathname.startsWith(HOSTD_ROUTES.call) && req.method === "POST") {
        const method = url.pathname.slice(HOSTD_ROUTES.call.length);
        if (!calls.has(method)) throw new HostdError("bad_request", `no such call: ${method}`);
        const args = await readJson(req);
        if (!Array.isArray(args)) throw new HostdError("bad_request", "call arguments must be a JSON array");
        const fn = daemon[method as HostdCall] as (...a: unknown[]) => Promise<unknown>;
        return await answerLong(res, () => fn.apply(daemon, args));
      }
      if (url.pathname === HOSTD_ROUTES.files) return await files(req, res, url.searchParams);
      if (url.pathname === HOSTD_ROUTES.events && req.method === "GET") return events(res);
      if (url.pathname === HOSTD_ROUTES.ensureImage && req.method === "POST")
        return await ensureImage(req, res);
      json(res, 404, { error: { code: "bad_request", message: `no route ${req.method} ${url.pathname}` } });
    } catch (e) {
      const w = toWireError(e);
      // A refused upload is still arriving: drain it before answering, or the client hits EPIPE
      // before it reads our answer.
      if (!req.complete) {
        req.resume();
        await new Promise((r) => req.once("end", r).once("close", r));
      }
      if (!res.headersSent) json(res, HOSTD_ERROR_STATUS[w.error.code] ?? 500, w);
      else res.destroy();
      if (w.error.code === "internal")
        opts.log?.warn("hostd request failed", { path: url.pathname, err: w.error.message });
    }
  };

  const upgrade = (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on("error", () => undefined);
    const refuse = (status: string) => {
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    };
    if (!authorized(req.headers.authorization)) return refuse("401 Unauthorized");
    if (req.headers.upgrade !== HOSTD_UPGRADE) return refuse("400 Bad Request");
    const path = new URL(req.url ?? "/", "http://hostd").pathname;
    const kind =
      path === HOSTD_ROUTES.exec
        ? "exec"
        : path === HOSTD_ROUTES.pty
          ? "pty"
          : path === HOSTD_ROUTES.tcp
            ? "tcp"
            : undefined;
    if (!kind) return refuse("404 Not Found");
    let headerReq: Record<string, unknown> | undefined;
    const raw = req.headers[HOSTD_REQUEST_HEADER];
    if (typeof raw === "string") {
      try {
        headerReq = JSON.parse(Buffer.from(raw, "base64url").toString("utf8"));
      } catch {
        return refuse("400 Bad Request");
      }
    }
    socket.setKeepAlive(true, 10_000);
    if (head.length) socket.unshift(head);
    const accept = () =>
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: ${HOSTD_UPGRADE}\r\n\r\n`,
      );
    // Refused before the switch: an ordinary error answer, its body the wire error.
    const refuseWith = (e: unknown) => {
      const w = toWireError(e);
      const body = JSON.stringify(w);
      const status = HOSTD_ERROR_STATUS[w.error.code] ?? 500;
      socket.end(
        `HTTP/1.1 ${status} Refused\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    };
    void serveStream(daemon, kind, socket, headerReq, accept, refuseWith);
  };

  const server = opts.tls ? createTlsServer({ cert: opts.tls.cert, key: opts.tls.key }) : createServer();
  server.on("request", (req, res) => void handle(req, res));
  server.on("upgrade", upgrade);
  server.on("clientError", (_e, socket: Socket) => socket.destroy());
  // Long answers heartbeat, streams are as long as the client wants: no server-side request timeout.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  return server;
}

/** Listens on `host:port`, `[v6]:port` or `unix:/path`; resolves with the address to give `serve --hostd`. */
export async function listenHostd(server: Server, listen: string): Promise<string> {
  const scheme = server instanceof Object && "setSecureContext" in server ? "https" : "http";
  if (listen.startsWith("unix:")) {
    const path = listen.slice(5);
    await rm(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    // The token guards it too, but nobody else on the machine needs to reach the socket at all.
    await chmod(path, 0o600);
    return `unix:${path}`;
  }
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) throw new HostdError("bad_request", `--listen must be host:port or unix:/path, got ${listen}`);
  const host = m[1] ?? m[2]!;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(m[3]), host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : Number(m[3]);
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
}
