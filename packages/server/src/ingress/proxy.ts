/**
 * The ingress proxy: its own listener (CREATEOS_SANDBOX_INGRESS_LISTEN), never an API route. A request's
 * Host names a sandbox and a guest port (host.ts); the proxy wakes a paused sandbox (wake.ts), opens a
 * tunnel to `127.0.0.1:<port>` in the guest through the sandbox's host daemon (`connectTcp`, the same
 * byte stream the API's tunnel route uses, over the hostd wire when the host is remote) and forwards the
 * exchange on it (forward.ts). Refusals are plain text with the catalog's words; the request log line
 * carries the code.
 */
import { readFileSync } from "node:fs";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ApiError, type HostDaemon, apiError } from "@createos-sandbox/protocol";
import { rawHead } from "@createos-sandbox/protocol/http-relay";
import { hostdCode, mapHostdError } from "../hosterr.js";
import { capConnections, clientAddress, overCap, serverOptions } from "../http/conn.js";
import type { App } from "../routes/common.js";
import { parseListen } from "../routes/metrics.js";
import type { SandboxRow } from "../store/types.js";
import { type Failure, forwardRequest, forwardUpgrade, upstreamHeaders } from "./forward.js";
import { parseIngressHost, portSuffix } from "./host.js";
import { IngressMeter } from "./meter.js";
import { WakeTimeout, Waker } from "./wake.js";

/** What a routed request holds: its sandbox, the tunnel to the guest port, and how to give both back. */
interface Target {
  row: SandboxRow;
  port: number;
  conn: Duplex;
  release(): void;
}

export interface IngressServer {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** A refusal as the client reads it: status, the catalog's message, Retry-After when it has one. */
function refusal(e: unknown): { status: number; text: string; headers: string[] } {
  const err = e instanceof ApiError ? e : apiError("internal");
  const headers = ["Content-Type", "text/plain; charset=utf-8", "Cache-Control", "no-store"];
  if (err.retryAfter) headers.push("Retry-After", String(err.retryAfter));
  return { status: err.status, text: `${err.message}\n`, headers };
}

/** The size of the request head the guest is sent. */
function headBytes(req: IncomingMessage, headers: string[]): number {
  let n = Buffer.byteLength(`${req.method} ${req.url} HTTP/1.1\r\n\r\n`);
  for (let i = 0; i < headers.length; i += 2) n += Buffer.byteLength(`${headers[i]}: ${headers[i + 1]}\r\n`);
  return n;
}

export class Ingress {
  private readonly waker: Waker;
  private readonly meter: IngressMeter;
  readonly scheme: "http" | "https";

  constructor(private readonly app: App) {
    this.waker = new Waker(app);
    this.meter = new IngressMeter(app.store, app.sandboxes);
    this.scheme = app.cfg.ingressTlsCert ? "https" : "http";
  }

  /** Binds the listener and fills in `cfg.ingressOrigin`, from which the views build their templates. */
  async listen(spec: string): Promise<IngressServer> {
    const { cfg } = this.app;
    const { host, port } = parseListen(spec, "CREATEOS_SANDBOX_INGRESS_LISTEN");
    const opts = serverOptions(cfg);
    const server: Server = cfg.ingressTlsCert
      ? createTlsServer({
          ...opts,
          cert: readFileSync(cfg.ingressTlsCert),
          key: readFileSync(cfg.ingressTlsKey!),
        })
      : createServer(opts);
    capConnections(server, cfg);
    server.on("request", (req, res) => void this.onRequest(req, res));
    server.on("upgrade", (req, socket, head) => void this.onUpgrade(req, socket as Socket, head));
    server.on("clientError", (_e, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const bound = (server.address() as AddressInfo).port;
    cfg.ingressOrigin = {
      scheme: this.scheme,
      port: portSuffix(this.scheme, cfg.ingressPublicPort || bound),
    };
    const url = `${this.scheme}://${host.includes(":") ? `[${host}]` : host}:${bound}`;
    return {
      server,
      url,
      close: async () => {
        await new Promise<void>((r) => {
          server.close(() => r());
          server.closeAllConnections();
        });
        await this.meter.flushAll();
      },
    };
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const t = await this.route(req).catch((e) => {
      const r = refusal(e);
      if (!res.headersSent) res.writeHead(r.status, r.headers).end(r.text);
      this.logLine(req, r.status, t0, undefined, e);
    });
    if (!t) return;
    // The client left while the sandbox woke: nothing is sent, the tunnel is given back.
    if (req.socket.destroyed) {
      t.conn.destroy();
      t.release();
      return;
    }
    const headers = upstreamHeaders(req, clientAddress(req.socket), this.scheme);
    this.meter.add(t.row.id, headBytes(req, headers));
    req.on("data", (c: Buffer) => this.meter.add(t.row.id, c.length));
    // Its log line is the one `finish` writes.
    const ex = forwardRequest(req, res, t.conn, headers, this.app.cfg.ingressResponseTimeoutMs, (why) => {
      const r = refusal(this.failure(why, t));
      if (!res.headersSent) res.writeHead(r.status, r.headers).end(r.text);
    });
    res.once("finish", () => this.logLine(req, res.statusCode, t0, t.row.id));
    await ex.done;
    t.release();
  }

  private async onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const t0 = performance.now();
    // Set once routed: refusals after that (the guest's 504) name the sandbox in the log.
    const routed: { id?: string } = {};
    const refuse = (e: unknown) => {
      const r = refusal(e);
      const lenHeaders = [
        ...r.headers,
        "Content-Length",
        String(Buffer.byteLength(r.text)),
        "Connection",
        "close",
      ];
      if (socket.writable) socket.end(rawHead(r.status, "", lenHeaders) + r.text);
      // out of the HTTP server's hands, no deadline covers it: a client that does not close is let go
      setTimeout(() => socket.destroy(), 2000).unref();
      this.logLine(req, r.status, t0, routed.id, e);
    };
    socket.on("error", () => socket.destroy());
    const t = await this.route(req).catch(refuse);
    if (!t) return;
    routed.id = t.row.id;
    if (socket.destroyed) {
      t.conn.destroy();
      t.release();
      return;
    }
    const headers = upstreamHeaders(req, clientAddress(socket), this.scheme);
    // A listener on the socket would set it flowing before the guest's 101: its bytes are counted at the end.
    const read0 = socket.bytesRead;
    this.meter.add(t.row.id, headBytes(req, headers) + head.length);
    this.logLine(req, 101, t0, t.row.id);
    const ex = forwardUpgrade(
      req,
      socket,
      head,
      t.conn,
      headers,
      this.app.cfg.ingressResponseTimeoutMs,
      (why) => refuse(this.failure(why, t)),
    );
    await ex.done;
    this.meter.add(t.row.id, socket.bytesRead - read0);
    t.release();
  }

  private failure(why: Failure, t: Target): ApiError {
    const seconds = Math.round(this.app.cfg.ingressResponseTimeoutMs / 1000);
    return why === "timeout"
      ? apiError("ingress_timeout", { id: t.row.id, port: t.port, seconds })
      : apiError("upstream_connect_failed", { port: t.port });
  }

  /** The running sandbox and a tunnel to the port the Host names, or the ApiError that refuses it. */
  private async route(req: IncomingMessage): Promise<Target> {
    const over = overCap(req.socket);
    if (over) throw over;
    const { app } = this;
    const host = req.headers.host ?? "";
    const named = parseIngressHost(host, app.cfg.ingressDomain);
    const notFound = () => apiError("ingress_not_found", { host: host.slice(0, 200) });
    if (!named) throw notFound();
    let row = await app.store.getSandbox(named.sandboxId);
    if (!row || !row.ingress_enabled || ["destroying", "destroyed", "failed"].includes(row.status))
      throw notFound();
    const { port } = named;
    const woke = row.status !== "running";
    const until = Date.now() + app.cfg.ingressWakeTimeoutMs;
    const timeout = () =>
      apiError("ingress_timeout", {
        id: named.sandboxId,
        port,
        seconds: Math.round(app.cfg.ingressWakeTimeoutMs / 1000),
      });
    try {
      row = await this.waker.running(row, until);
    } catch (e) {
      throw e instanceof WakeTimeout ? timeout() : e;
    }
    const claim = app.tenantStreams.open(row.user_id);
    let conn: Duplex;
    try {
      conn = await this.connect(app.sandboxes.daemonFor(row), row, port, woke ? until : 0, timeout);
    } catch (e) {
      claim.release();
      throw e;
    }
    app.sandboxes.streamOpened(row.id);
    let released = false;
    const id = row.id;
    return {
      row,
      port,
      conn,
      release: () => {
        if (released) return;
        released = true;
        claim.release();
        app.sandboxes.streamClosed(id);
      },
    };
  }

  /**
   * A tunnel to the guest port. Nothing listening is a 502 at once, except for a sandbox this request
   * woke (or found starting): its server may still be coming up, so refusals are retried until `until`.
   */
  private async connect(
    daemon: HostDaemon,
    row: SandboxRow,
    port: number,
    until: number,
    timeout: () => ApiError,
  ): Promise<Duplex> {
    for (;;) {
      try {
        return await daemon.connectTcp(row.id, port);
      } catch (e) {
        // The agent reports a refused connect as `bad_request` (ECONNREFUSED).
        if (hostdCode(e) !== "bad_request") throw mapHostdError(e, { action: "reach a port in" });
        if (Date.now() >= until) {
          if (until) throw timeout();
          throw apiError("ingress_no_listener", { id: row.id, port });
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private logLine(req: IncomingMessage, status: number, t0: number, id?: string, err?: unknown): void {
    const fields: Record<string, unknown> = {
      host: req.headers.host,
      method: req.method,
      status,
      ms: Math.round(performance.now() - t0),
    };
    if (id) fields.sandbox_id = id;
    if (err instanceof ApiError) fields.code = err.code;
    else if (err) fields.err = err;
    if (status >= 500 && !(err instanceof ApiError)) this.app.log.warn("ingress", fields);
    else this.app.log.info("ingress", fields);
  }
}
