/**
 * The client's side of the host-daemon connection: where the daemon is (`http://`, `https://` or
 * `unix:/path`), its token, and one function per kind of exchange (a call, a raw HTTP request, an
 * upgrade). Every transport failure becomes a HostdError `unreachable`, so the control plane answers 503
 * with Retry-After instead of hanging or failing with a 500.
 */
import {
  type ClientRequest,
  Agent as HttpAgent,
  type IncomingMessage,
  request as httpRequest,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import { FrameConn, HOSTD_UPGRADE, fromWireError } from "./hostd-wire.js";
import { HostdError } from "./hostd.js";

export interface RemoteOptions {
  /** Bearer token (`CREATEOS_SANDBOX_HOSTD_TOKEN`). */
  token: string;
  /** PEM of the CA (or self-signed certificate) that an `https://` daemon's certificate must chain to. */
  ca?: string | Buffer;
  /** No byte for this long on a call or stream means the daemon is gone (it heartbeats every 5 s). */
  idleTimeoutMs?: number;
  /** TCP/TLS connect budget. */
  connectTimeoutMs?: number;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 20_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 3_000;

interface Target {
  https: boolean;
  hostname?: string;
  port?: number;
  socketPath?: string;
}

export function parseHostdUrl(url: string): Target {
  if (url.startsWith("unix:")) {
    const path = url.slice(5);
    if (!path.startsWith("/"))
      throw new HostdError("bad_request", `unix: needs an absolute path, got ${url}`);
    return { https: false, socketPath: path };
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HostdError(
      "bad_request",
      `not a host daemon URL: ${url} (http://host:port, https://… or unix:/path)`,
    );
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new HostdError("bad_request", `host daemon URL must be http, https or unix: ${url}`);
  const https = u.protocol === "https:";
  return { https, hostname: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || (https ? 443 : 80)) };
}

export class Transport {
  private readonly target: Target;
  private readonly agent: HttpAgent;
  readonly idleMs: number;
  private readonly connectMs: number;

  constructor(
    readonly url: string,
    private readonly opts: RemoteOptions,
  ) {
    this.target = parseHostdUrl(url);
    const agentOpts = { keepAlive: true, maxSockets: 64, ...(opts.ca ? { ca: opts.ca } : {}) };
    this.agent = this.target.https ? new HttpsAgent(agentOpts) : new HttpAgent(agentOpts);
    this.idleMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.connectMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  }

  unreachable(detail: string): HostdError {
    return new HostdError("unreachable", `host daemon ${this.url} is unreachable: ${detail}`);
  }

  /** Starts a request; `pooled: false` gives the exchange a connection of its own (upgrades, long streams). */
  start(method: string, path: string, headers: Record<string, string> = {}, pooled = true): ClientRequest {
    const t = this.target;
    const req = (t.https ? httpsRequest : httpRequest)({
      method,
      path,
      ...(t.socketPath ? { socketPath: t.socketPath } : { hostname: t.hostname, port: t.port }),
      agent: pooled ? this.agent : false,
      ...(t.https && this.opts.ca ? { ca: this.opts.ca } : {}),
      headers: { authorization: `Bearer ${this.opts.token}`, ...headers },
    });
    // Connect budget, then an idle budget for as long as the exchange lasts.
    const connectTimer = setTimeout(() => req.destroy(this.unreachable("connect timed out")), this.connectMs);
    req.once("socket", (s) => {
      const connected = () => clearTimeout(connectTimer);
      if ((s as { connecting?: boolean }).connecting)
        s.once(t.https ? "secureConnect" : "connect", connected);
      else connected();
    });
    req.once("close", () => clearTimeout(connectTimer));
    // Errors after the answer arrived (a refused upload's EPIPE) are the answer's business, not a crash.
    req.on("error", () => undefined);
    req.setTimeout(this.idleMs, () => req.destroy(this.unreachable(`no answer for ${this.idleMs} ms`)));
    return req;
  }

  /** Ends `req` with `body` (a whole, small one, or none) and waits for a 200; any other answer is thrown. */
  async exchange(req: ClientRequest, body?: string): Promise<IncomingMessage> {
    const resP = this.response(req);
    req.end(body);
    const res = await resP;
    if (res.statusCode !== 200) throw await this.failure(res);
    return res;
  }

  /** Waits for the response head; transport errors and 401 become HostdErrors. */
  response(req: ClientRequest): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      req.once("error", (e) => reject(this.asHostd(e)));
      req.once("response", (res) => {
        const refused = this.refused(res);
        if (refused) reject(refused);
        else resolve(res);
      });
    });
  }

  /** A 401 answer as the error it stands for (its body is drained); undefined for any other status. */
  private refused(res: IncomingMessage): HostdError | undefined {
    if (res.statusCode !== 401) return undefined;
    res.resume();
    return new HostdError("unauthorized", `host daemon ${this.url} refused the token (401)`);
  }

  asHostd(e: unknown): HostdError {
    if (e instanceof HostdError) return e;
    return this.unreachable(e instanceof Error ? e.message : String(e));
  }

  /** Reads a whole (small) body; an error status's body is a wire error. */
  async body(res: IncomingMessage): Promise<Buffer> {
    const parts: Buffer[] = [];
    try {
      for await (const c of res) parts.push(c as Buffer);
    } catch (e) {
      throw this.asHostd(e);
    }
    return Buffer.concat(parts);
  }

  async failure(res: IncomingMessage): Promise<HostdError> {
    const text = (await this.body(res).catch(() => Buffer.alloc(0))).toString("utf8");
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return fromWireError(parsed, `host daemon ${this.url} answered ${res.statusCode}: ${text.slice(0, 200)}`);
  }

  /**
   * An upgraded connection carrying frames. Taken from the keep-alive pool when a connection is idle there
   * (the health check keeps one warm), which saves the TCP (and TLS) handshake; the upgrade detaches it.
   */
  upgrade(path: string, headers: Record<string, string> = {}): Promise<FrameConn> {
    const req = this.start("GET", path, { connection: "Upgrade", upgrade: HOSTD_UPGRADE, ...headers });
    return new Promise((resolve, reject) => {
      req.once("error", (e) => reject(this.asHostd(e)));
      // A plain answer instead of the switch is a refusal (401, or an error before the stream opened).
      req.once("response", (res) => {
        const refused = this.refused(res);
        if (refused) reject(refused);
        else void this.failure(res).then(reject);
      });
      req.once("upgrade", (_res, socket: Socket, head: Buffer) => {
        // A shell may be quiet for hours: liveness of an open stream is TCP keepalive's, not an idle timer.
        socket.setTimeout(0);
        socket.setKeepAlive(true, 10_000);
        if (head.length) socket.unshift(head);
        resolve(new FrameConn(socket));
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
