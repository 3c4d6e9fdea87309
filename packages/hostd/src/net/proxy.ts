/**
 * The name proxy for HTTP (80) and TLS (443): with name rules in a sandbox's allowlist, an allowed address
 * is not enough on those ports — a CDN address serves many sites — so the guest's connections to an address
 * its resolver pinned (net/egress.ts) are DNATed to this proxy, which checks the name the guest asks for
 * against the sandbox's list and resolves it itself (the sandboxes' upstream DNS, so `/etc/hosts` tricks in
 * the guest do not help):
 * - TLS: the ClientHello's SNI; the connection is spliced to the name's address. A name not on the list,
 *   none, or one that resolves only to refused addresses is reset. What the encrypted requests name inside
 *   is not seen (no interception): a shared address's server that routes by the inner Host over any SNI
 *   (domain fronting, which large CDNs have stopped serving) is beyond this check.
 * - HTTP: every request on the connection, by Node's parser (net/proxyhttp.ts), each forwarded on an
 *   upstream connection of its own; a refused one is answered 403 saying why, and the connection closed.
 *
 *   guest ─tcp 80/443 to a pinned address─▶ (namespace prerouting, `createos_egress`) dnat to
 *     PROXY_IP:<port> ─▶ veth ─▶ root namespace, this daemon's listener (PROXY_IP on lo)
 *
 * PROXY_IP, 10.200.0.1, is the veth range's slot-0 address, which no slot uses; each daemon listens on its
 * own ports there. The source of a connection is the sandbox's address (10.201.<slot>, set by the
 * namespace's SNAT, unforgeable behind the anti-spoof table), which names the sandbox. The proxy's own
 * connections are the host's: they are checked against the same ranges the guest firewall refuses. What
 * the guest sends through it crosses its namespace, so it is metered (and capped) like the rest.
 */
import { Resolver } from "node:dns/promises";
import { type IncomingMessage, type ServerResponse, createServer as createHttpServer } from "node:http";
import { type AddressInfo, type Server, type Socket, connect, createServer, isIPv4 } from "node:net";
import type { Duplex } from "node:stream";
import type { EgressPolicy, NameRule } from "@createos-sandbox/protocol/egress";
import { cidrWithin } from "@createos-sandbox/protocol/egress";
import { DENIED, NEVER, hostAddresses } from "./firewall.js";
import { PROXY_IP } from "./plan.js";
import { forwardRequest, forwardUpgrade, hostName, refuse, refuseRaw, requestName } from "./proxyhttp.js";

export { PROXY_IP } from "./plan.js";

/** How long a guest has to send a request head / the ClientHello, and the most we read to find the name. */
const FIRST_BYTES_MS = 5000;
const MAX_FIRST_BYTES = 16 * 1024;
/** How long a kept-alive HTTP connection may sit idle between two requests. */
const HTTP_IDLE_MS = 60_000;

export interface ProxyPorts {
  http: number;
  tls: number;
}

/** The server name of a TLS ClientHello (its first record), or undefined: no SNI, not TLS, incomplete. */
export function sniOf(b: Buffer): string | undefined {
  if (b.length < 5 || b[0] !== 0x16) return undefined;
  const end = Math.min(b.length, 5 + b.readUInt16BE(3));
  let o = 5;
  if (b[o] !== 0x01) return undefined; // ClientHello
  o += 4 + 2 + 32; // handshake header, version, random
  if (o >= end) return undefined;
  o += 1 + (b[o] ?? 0); // session id
  if (o + 2 > end) return undefined;
  o += 2 + b.readUInt16BE(o); // cipher suites
  if (o >= end) return undefined;
  o += 1 + (b[o] ?? 0); // compression methods
  if (o + 2 > end) return undefined;
  const extEnd = Math.min(end, o + 2 + b.readUInt16BE(o));
  o += 2;
  while (o + 4 <= extEnd) {
    const type = b.readUInt16BE(o);
    const len = b.readUInt16BE(o + 2);
    o += 4;
    if (type === 0 && o + 5 <= extEnd && b[o + 2] === 0) {
      const nameLen = b.readUInt16BE(o + 3);
      if (o + 5 + nameLen > extEnd) return undefined;
      return b
        .subarray(o + 5, o + 5 + nameLen)
        .toString("latin1")
        .toLowerCase();
    }
    o += len;
  }
  return undefined;
}

/**
 * Whether `name` on `port` is allowed by a name rule (`host` covers names under it, as the resolver does).
 * Only a host name can be: anything else (`evil.com x.allowed`) might mean another site to the upstream.
 */
export function nameAllowed(names: readonly NameRule[], name: string, port: number): boolean {
  if (hostName(name) !== name) return false;
  return names.some(
    (n) =>
      (n.port === undefined || n.port === port) &&
      (name.endsWith(`.${n.name}`) || (!n.subdomains && name === n.name)),
  );
}

/** Whether the proxy may dial `ip` for a guest: outside every refused range but the operator's. */
export function dialable(ip: string, privateEgress: readonly string[]): boolean {
  if (!isIPv4(ip)) return false;
  const c = `${ip}/32`;
  if (NEVER.some((r) => cidrWithin(c, r)) || hostAddresses().includes(ip)) return false;
  return !DENIED.some((r) => cidrWithin(c, r)) || privateEgress.some((r) => cidrWithin(c, r));
}

/** The slot of a sandbox address 10.201.<hi>.<lo>, or undefined for any other source. */
export function slotOfSource(ip: string): number | undefined {
  const m = /^(?:::ffff:)?10\.201\.(\d+)\.(\d+)$/.exec(ip);
  return m ? Number(m[1]) * 256 + Number(m[2]) : undefined;
}

/** A name whose addresses are all ones the sandbox may not reach: a refusal, not an upstream failure. */
class NoAddress extends Error {}

type Dialled = { up: Socket; path: string };
type Refusal = { status: 403 | 502; why: string };

export interface ProxyDeps {
  /** The policy of the sandbox on `slot`, if one runs there. */
  policyOf(slot: number): EgressPolicy | undefined;
  privateEgress: readonly string[];
  /** DNS servers to resolve names with (`ip:port`), the sandboxes' upstreams. */
  upstreams: readonly string[];
  onError?(e: unknown): void;
  /** Tests only: the address to listen on (PROXY_IP), a source's slot ({@link slotOfSource}), the port dialled. */
  listenIp?: string;
  slotOf?(source: string): number | undefined;
  upstreamPort?(port: 80 | 443): number;
}

/**
 * Proxied connections one sandbox may hold at once. Each costs the host daemon two descriptors (and a
 * lookup), and the daemon's descriptors serve every sandbox and the API: without a cap one guest opening
 * connections to an allowed name could starve them all. Far above a browser's or a package manager's.
 */
export const MAX_PROXIED_PER_SANDBOX = 256;

export class NameProxy {
  private servers: Server[] = [];
  private readonly conns = new Set<Socket>();
  /** Open proxied connections by slot (for {@link MAX_PROXIED_PER_SANDBOX}). */
  private readonly perSlot = new Map<number, number>();
  /** HTTP connections a refusal was answered on (they close after it). */
  private readonly closing = new WeakSet<Socket>();
  ports: ProxyPorts = { http: 0, tls: 0 };

  constructor(private readonly deps: ProxyDeps) {}

  async start(): Promise<ProxyPorts> {
    const listen = (s: Server) =>
      new Promise<number>((resolve, reject) => {
        s.once("error", reject);
        s.listen(0, this.deps.listenIp ?? PROXY_IP, () => resolve((s.address() as AddressInfo).port));
        this.servers.push(s);
      });
    this.ports = {
      http: await listen(this.httpServer()),
      tls: await listen(createServer((c) => this.tls(c))),
    };
    return this.ports;
  }

  /** A connection's sandbox policy with name rules, or undefined (reset: not a sandbox, or no list). */
  private policyOf(c: Socket): Extract<EgressPolicy, { all: false }> | undefined {
    const slot = (this.deps.slotOf ?? slotOfSource)(c.remoteAddress ?? "");
    const policy = slot === undefined ? undefined : this.deps.policyOf(slot);
    return policy && !policy.all ? policy : undefined;
  }

  /**
   * Tracks `c` (for close) and resets it unless its sandbox has a list and fewer than
   * {@link MAX_PROXIED_PER_SANDBOX} proxied connections open.
   */
  private admit(c: Socket): Extract<EgressPolicy, { all: false }> | undefined {
    this.conns.add(c);
    c.once("close", () => this.conns.delete(c));
    c.on("error", () => undefined);
    const policy = this.policyOf(c);
    const slot = (this.deps.slotOf ?? slotOfSource)(c.remoteAddress ?? "");
    const open = slot === undefined ? 0 : (this.perSlot.get(slot) ?? 0);
    if (!policy || slot === undefined || open >= MAX_PROXIED_PER_SANDBOX) {
      c.resetAndDestroy();
      return undefined;
    }
    this.perSlot.set(slot, open + 1);
    c.once("close", () => {
      const n = (this.perSlot.get(slot) ?? 1) - 1;
      if (n > 0) this.perSlot.set(slot, n);
      else this.perSlot.delete(slot);
    });
    return policy;
  }

  /**
   * Port 80: Node's HTTP server, so that every request of a connection is parsed and checked (the policy
   * read again for each: a name taken off the list stops at the connection's next request).
   */
  private httpServer(): Server {
    const s = createHttpServer(
      {
        maxHeaderSize: MAX_FIRST_BYTES,
        headersTimeout: FIRST_BYTES_MS,
        connectionsCheckingInterval: 500,
        // bodies stream as long as they take, as a spliced connection's did
        requestTimeout: 0,
        keepAliveTimeout: HTTP_IDLE_MS,
        // a missing Host is our 403 saying so, not Node's bare 400
        requireHostHeader: false,
      },
      (req, res) =>
        void this.onRequest(req, res).catch((e) => {
          this.deps.onError?.(e);
          res.destroy();
        }),
    );
    s.on("connection", (c: Socket) => this.admit(c));
    s.on(
      "upgrade",
      (req: IncomingMessage, socket: Duplex, head: Buffer) =>
        void this.onUpgrade(req, socket, head).catch((e) => {
          this.deps.onError?.(e);
          socket.destroy();
        }),
    );
    s.on("connect", (_req: IncomingMessage, socket: Duplex) =>
      refuseRaw(socket, 403, "CONNECT is not allowed through the name proxy"),
    );
    return s;
  }

  /** The request's name and target if the sandbox may reach that name on port 80, or the refusal. */
  private check(req: IncomingMessage): { name: string; path: string } | Refusal {
    const policy = this.policyOf(req.socket);
    const named = requestName(req);
    if ("why" in named) return { status: 403, why: named.why };
    if (!policy || !nameAllowed(policy.names, named.name, 80))
      return { status: 403, why: `${named.name} is not on this sandbox's egress allowlist for port 80` };
    return named;
  }

  /** Its name's address dialled, or the refusal: 403 when none may be reached, 502 when dialling failed. */
  private async dialFor(named: { name: string; path: string }): Promise<Dialled | Refusal> {
    try {
      return { up: await this.dial(named.name, 80), path: named.path };
    } catch (e) {
      return { status: e instanceof NoAddress ? 403 : 502, why: (e as Error).message };
    }
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // After a refusal the connection closes: requests pipelined behind it go nowhere. The check is
    // synchronous so that it marks the socket before the parser hands over the next pipelined request.
    if (this.closing.has(req.socket)) return;
    const named = this.check(req);
    const r = "why" in named ? named : await this.dialFor(named);
    if ("why" in r) {
      this.closing.add(req.socket);
      return refuse(res, r.status, r.why);
    }
    if (res.destroyed) return void r.up.destroy();
    forwardRequest(req, res, r.up, r.path);
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => undefined);
    if (this.closing.has(req.socket)) return void socket.destroy();
    // h2c (or any protocol but WebSocket) would carry requests for other names past the parser
    if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket")
      return refuseRaw(socket, 403, "only WebSocket upgrades pass the name proxy");
    const named = this.check(req);
    const r = "why" in named ? named : await this.dialFor(named);
    if ("why" in r) return refuseRaw(socket, r.status, r.why);
    if (socket.destroyed) return void r.up.destroy();
    forwardUpgrade(req, socket, head, r.up, r.path);
  }

  /** Port 443: the ClientHello's SNI decides, then the connection is spliced. */
  private tls(c: Socket): void {
    const policy = this.admit(c);
    if (!policy) return;
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => c.resetAndDestroy(), FIRST_BYTES_MS);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const name = sniOf(buf);
      if (name === undefined && buf.length < MAX_FIRST_BYTES && !complete(buf)) return;
      clearTimeout(timer);
      c.off("data", onData);
      c.pause();
      if (!name || !nameAllowed(policy.names, name, 443)) return void c.resetAndDestroy();
      this.dial(name, 443).then(
        (up) => splice(c, up, buf),
        () => c.resetAndDestroy(),
      );
    };
    c.on("data", onData);
  }

  private async dial(name: string, proxied: 80 | 443): Promise<Socket> {
    const port = this.deps.upstreamPort?.(proxied) ?? proxied;
    const r = new Resolver({ timeout: 3000, tries: 2 });
    r.setServers([...this.deps.upstreams]);
    const addrs = (await r.resolve4(name)).filter((a) => dialable(a, this.deps.privateEgress));
    const ip = addrs[0];
    if (!ip) throw new NoAddress(`${name} has no address the sandbox may reach`);
    return await new Promise<Socket>((resolve, reject) => {
      const up = connect({ host: ip, port, timeout: 10_000 }, () => {
        up.setTimeout(0);
        resolve(up);
      });
      up.once("error", reject);
      up.once("timeout", () => up.destroy(new Error("connect timeout")));
    });
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    this.servers = [];
  }
}

/** A whole ClientHello record has arrived (so a missing name is final). */
function complete(b: Buffer): boolean {
  return b.length >= 5 && b.length >= 5 + b.readUInt16BE(3);
}

/** Guest ⇄ upstream, `first` (what the guest sent so far) written first; a reset on either side resets the other. */
function splice(c: Socket, up: Socket, first: Buffer): void {
  up.on("error", () => c.resetAndDestroy());
  c.on("error", () => up.resetAndDestroy());
  up.write(first);
  c.pipe(up);
  up.pipe(c);
  c.resume();
}
