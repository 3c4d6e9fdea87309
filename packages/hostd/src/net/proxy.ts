/**
 * The name proxy for HTTP (80) and TLS (443): with name rules in a sandbox's allowlist, an allowed address
 * is not enough on those ports — a CDN address serves many sites — so the guest's connections to an address
 * its resolver pinned (net/egress.ts) are DNATed to this proxy, which reads the Host header or the TLS
 * ClientHello's SNI, checks the name against the sandbox's list, resolves it itself (the sandboxes'
 * upstream DNS, so `/etc/hosts` tricks in the guest do not help) and splices the connection to it. A name
 * not on the list, a request with no name, or a name that resolves only to refused addresses is reset.
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
import { type AddressInfo, type Server, type Socket, connect, createServer, isIPv4 } from "node:net";
import type { EgressPolicy, NameRule } from "@createos-sandbox/protocol/egress";
import { cidrWithin } from "@createos-sandbox/protocol/egress";
import { DENIED, NEVER, hostAddresses } from "./firewall.js";
import { PROXY_IP } from "./plan.js";

export { PROXY_IP } from "./plan.js";

/** How long a guest has to send the request line / ClientHello, and the most we read to find the name. */
const FIRST_BYTES_MS = 5000;
const MAX_FIRST_BYTES = 16 * 1024;

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

/** The Host header of an HTTP/1 request head (port and trailing dot stripped), or undefined. */
export function httpHostOf(b: Buffer): string | undefined {
  const head = b.toString("latin1");
  const end = head.indexOf("\r\n\r\n");
  if (end === -1) return undefined;
  const m = /\r\nhost:[ \t]*([^\r\n]*)/i.exec(head.slice(0, end + 2));
  const host = m?.[1]?.trim().toLowerCase();
  if (!host || host.startsWith("[")) return undefined;
  return host.replace(/:\d+$/, "").replace(/\.$/, "");
}

/** Whether `name` on `port` is allowed by a name rule (`host` covers names under it, as the resolver does). */
export function nameAllowed(names: readonly NameRule[], name: string, port: number): boolean {
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

export interface ProxyDeps {
  /** The policy of the sandbox on `slot`, if one runs there. */
  policyOf(slot: number): EgressPolicy | undefined;
  privateEgress: readonly string[];
  /** DNS servers to resolve names with (`ip:port`), the sandboxes' upstreams. */
  upstreams: readonly string[];
  onError?(e: unknown): void;
}

export class NameProxy {
  private servers: Server[] = [];
  private readonly conns = new Set<Socket>();
  ports: ProxyPorts = { http: 0, tls: 0 };

  constructor(private readonly deps: ProxyDeps) {}

  async start(): Promise<ProxyPorts> {
    const listen = (port: 80 | 443) =>
      new Promise<number>((resolve, reject) => {
        const s = createServer((c) => this.serve(c, port));
        s.once("error", reject);
        s.listen(0, PROXY_IP, () => resolve((s.address() as AddressInfo).port));
        this.servers.push(s);
      });
    this.ports = { http: await listen(80), tls: await listen(443) };
    return this.ports;
  }

  private serve(c: Socket, port: 80 | 443): void {
    this.conns.add(c);
    c.once("close", () => this.conns.delete(c));
    c.on("error", () => undefined);
    const slot = slotOfSource(c.remoteAddress ?? "");
    const policy = slot === undefined ? undefined : this.deps.policyOf(slot);
    if (!policy || policy.all) return void c.resetAndDestroy();
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => c.resetAndDestroy(), FIRST_BYTES_MS);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const name = port === 443 ? sniOf(buf) : httpHostOf(buf);
      if (name === undefined && buf.length < MAX_FIRST_BYTES && !complete(buf, port)) return;
      clearTimeout(timer);
      c.off("data", onData);
      c.pause();
      if (!name || !nameAllowed(policy.names, name, port)) return void c.resetAndDestroy();
      this.dial(name, port).then(
        (up) => splice(c, up, buf),
        () => c.resetAndDestroy(),
      );
    };
    c.on("data", onData);
  }

  private async dial(name: string, port: number): Promise<Socket> {
    const r = new Resolver({ timeout: 3000, tries: 2 });
    r.setServers([...this.deps.upstreams]);
    const addrs = (await r.resolve4(name)).filter((a) => dialable(a, this.deps.privateEgress));
    const ip = addrs[0];
    if (!ip) throw new Error(`${name}: no address the sandbox may reach`);
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

/** A whole ClientHello record or request head has arrived (so a missing name is final). */
function complete(b: Buffer, port: number): boolean {
  if (port === 80) return b.includes("\r\n\r\n");
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
