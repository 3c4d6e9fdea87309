/**
 * Where the platform's own connections made for a tenant may go. A disk's S3 endpoint is the tenant's
 * word: the control plane checks the bucket at registration and the host's disk proxy forwards the
 * guest's requests there, both from inside the operator's network. Unchecked, `http://169.254.169.254`
 * (the cloud's metadata service and its credentials), a loopback port or a LAN host named as an endpoint
 * would be fetched by the host for the guest, past the firewall that keeps the guest itself from them.
 *
 * So such a connection meets the guest's own rule (egress.ts): public addresses only, and the private or
 * reserved IPv4 ranges the operator lists (`CREATEOS_SANDBOX_PRIVATE_EGRESS`), never the ones a caller
 * marks as never reachable (the host daemon's own address plan) nor — unless listed — an address of the
 * machine itself. IPv6 only in global unicast (2000::/3) outside the special blocks; mapped, NAT64,
 * 6to4, Teredo and local addresses are refused, as what they reach cannot be told from the address.
 *
 * The check is made on the address connected to ({@link guardedLookup}), at every connection: a name
 * that pointed at a public server at registration and at 127.0.0.1 a minute later (DNS rebinding) is
 * refused then.
 */
import { lookup as dnsLookup } from "node:dns";
import { BlockList, type LookupFunction, isIP, isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";
import { PRIVATE_RANGES, cidrWithin } from "./egress.js";

export interface OutboundRules {
  /** Normalised IPv4 CIDRs inside {@link PRIVATE_RANGES} that may be reached anyway (the operator's list). */
  privateEgress: readonly string[];
  /** Normalised IPv4 CIDRs refused even when `privateEgress` covers them. */
  never?: readonly string[];
}

const V6_GLOBAL = new BlockList();
V6_GLOBAL.addSubnet("2000::", 3, "ipv6");
const V6_SPECIAL = new BlockList();
for (const [net, bits] of [
  ["2001::", 23], // IETF protocol assignments: Teredo, benchmarking, ORCHID
  ["2001:db8::", 32], // documentation
  ["2002::", 16], // 6to4: an IPv4 address inside
] as const)
  V6_SPECIAL.addSubnet(net, bits, "ipv6");

/** This machine's own addresses (any family). */
export function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address));
}

/** Why `ip` may not be connected to under `rules`, or undefined when it may. */
export function outboundRefusal(
  ip: string,
  rules: OutboundRules,
  local: readonly string[] = localAddresses(),
): string | undefined {
  const family = isIP(ip);
  if (family === 0) return "not an IP address";
  if (family === 6) {
    const global = V6_GLOBAL.check(ip, "ipv6") && !V6_SPECIAL.check(ip, "ipv6");
    if (!global || local.includes(ip)) return "not a public IPv6 address";
    return undefined;
  }
  const c = `${ip}/32`;
  const listed = rules.privateEgress.some((r) => cidrWithin(c, r));
  if (rules.never?.some((r) => cidrWithin(c, r))) return "an address of the platform's own";
  if (local.includes(ip) && !listed) return "an address of this machine";
  const range = PRIVATE_RANGES.find((r) => cidrWithin(c, r));
  if (range && !listed) return `an address in the private or reserved range ${range}`;
  return undefined;
}

/** The error a refused address fails a connection with (`code` ERR_OUTBOUND_REFUSED). */
export class OutboundRefused extends Error {
  readonly code = "ERR_OUTBOUND_REFUSED";
  constructor(
    readonly host: string,
    readonly address: string,
    readonly reason: string,
  ) {
    super(`${host} is at ${address}, ${reason}`);
    this.name = "OutboundRefused";
  }
}

/**
 * A `lookup` for `http.request` / `net.connect` that resolves as usual and keeps only the addresses
 * `rules` allow, failing with {@link OutboundRefused} when none is left. Node does not call a lookup for
 * an IP literal: check those with {@link refuseLiteral} before connecting.
 */
export function guardedLookup(rules: OutboundRules, local?: () => readonly string[]): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addrs) => {
      if (err) return callback(err, "", 0);
      const here = local?.() ?? localAddresses();
      const verdicts = addrs.map((a) => ({ a, why: outboundRefusal(a.address, rules, here) }));
      const ok = verdicts.filter((v) => v.why === undefined).map((v) => v.a);
      if (ok.length === 0) {
        const first = verdicts[0];
        const e = new OutboundRefused(hostname, first?.a.address ?? "", first?.why ?? "no address");
        return callback(e as NodeJS.ErrnoException, "", 0);
      }
      if (options.all) return (callback as (e: null, a: typeof ok) => void)(null, ok);
      const v4 = ok.find((a) => isIPv4(a.address));
      const pick = options.family === 6 ? ok[0]! : (v4 ?? ok[0]!);
      callback(null, pick.address, pick.family);
    });
  };
}

/** For an endpoint whose host is an IP literal: the refusal to fail with, or undefined. */
export function refuseLiteral(
  host: string,
  rules: OutboundRules,
  local?: readonly string[],
): OutboundRefused | undefined {
  const ip = host.startsWith("[") ? host.slice(1, -1) : host;
  if (isIP(ip) === 0) return undefined;
  const why = outboundRefusal(ip, rules, local);
  return why === undefined ? undefined : new OutboundRefused(host, ip, why);
}
