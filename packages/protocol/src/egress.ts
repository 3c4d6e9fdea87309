/**
 * The egress allowlist's meaning, shared by the control plane (validation, 400 naming the bad rule) and
 * the host daemon (enforcement, packages/hostd/src/net/egress.ts). Grammar (protocol.md §2.5): `*`,
 * `host`, `*.host`, `host:port`, `ip`, `ip:port`, `cidr`, `cidr:port`; IPv6 literals as `[addr]` /
 * `[addr]:port` are accepted and allow nothing (guests have no IPv6). `[]`, `["*"]` or any list holding
 * `*` allows everything; any other list is default deny for the outside world. A port covers TCP and UDP,
 * with one exception: a name rule (`host`, `host:port`, `*.host`) never allows UDP 80 or 443 (QUIC) to the
 * name's addresses, because the host checks the name of HTTP/TLS only on TCP (its name proxy reads the Host
 * header / TLS SNI); clients fall back to TCP. A name rule is enforced by the addresses the sandbox's
 * resolver handed out for the name: on ports other than TCP 80/443 it allows those addresses whatever name
 * the guest uses for them, so an address shared by many names (a CDN's) is open to all of them there. An
 * address rule (`ip`, `cidr`, with or without a port) allows TCP and UDP alike, 80 and 443 included.
 *
 * An IPv4 rule lying wholly inside a private or reserved range (PRIVATE_RANGES) is refused unless a CIDR of
 * `CREATEOS_SANDBOX_PRIVATE_EGRESS` contains it: the host firewall refuses those ranges whatever the list
 * says, so such a rule could never work. A wider rule (`0.0.0.0/0`) is accepted; its private parts stay
 * refused.
 */
import { isIP, isIPv4 } from "node:net";

/** IANA's special-purpose IPv4 ranges that are not globally routable (RFC 6890 and successors), multicast. */
export const PRIVATE_RANGES = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

export const MAX_EGRESS_RULE_LENGTH = 300;

/** An address rule: `cidr` normalised (`a.b.c.d/n`, host bits cleared). */
export interface NetRule {
  cidr: string;
  port?: number;
}

/** A name rule: `name` lower-case without the `*.`; `subdomains` for `*.name`. */
export interface NameRule {
  name: string;
  subdomains: boolean;
  port?: number;
}

/** What a rule list allows: everything (`all`), or exactly these nets and names. */
export type EgressPolicy = { all: true } | { all: false; nets: NetRule[]; names: NameRule[] };

export class EgressRuleError extends Error {
  constructor(
    readonly rule: string,
    why: string,
  ) {
    super(`invalid egress rule ${JSON.stringify(rule.slice(0, 100))}: ${why}`);
    this.name = "EgressRuleError";
  }
}

const GRAMMAR = "expected host, host:port, *.host, ip, ip:port, cidr or cidr:port";
const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

const toInt = (ip: string) => ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
const fromInt = (n: number) => [24, 16, 8, 0].map((sh) => Math.floor(n / 2 ** sh) % 256).join(".");

/** `a.b.c.d[/n]` → `a.b.c.d/n` with the host bits cleared, or undefined when it is not one. */
export function normaliseCidr(s: string): string | undefined {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(s);
  const bits = m?.[2] === undefined ? 32 : Number(m[2]);
  if (!m?.[1] || !isIPv4(m[1]) || bits > 32) return undefined;
  const size = 2 ** (32 - bits);
  return `${fromInt(Math.floor(toInt(m[1]) / size) * size)}/${bits}`;
}

/** Whether normalised `inner` lies wholly inside normalised `outer`. */
export function cidrWithin(inner: string, outer: string): boolean {
  const [ia = "", ib = "32"] = inner.split("/");
  const [oa = "", ob = "32"] = outer.split("/");
  if (Number(ib) < Number(ob)) return false;
  const size = 2 ** (32 - Number(ob));
  return Math.floor(toInt(ia) / size) === Math.floor(toInt(oa) / size);
}

function port(s: string | undefined, rule: string): number | undefined {
  if (s === undefined) return undefined;
  const n = /^\d{1,5}$/.test(s) ? Number(s) : 0;
  if (n < 1 || n > 65535) throw new EgressRuleError(rule, "the port must be 1-65535");
  return n;
}

/** One rule → what it allows (`null` for `*`, `undefined` for an IPv6 rule); throws {@link EgressRuleError}. */
export function parseEgressRule(
  rule: string,
  privateEgress: readonly string[] = [],
): NetRule | NameRule | null | undefined {
  if (rule === "*") return null;
  if (typeof rule !== "string" || rule === "" || rule.length > MAX_EGRESS_RULE_LENGTH || rule.trim() !== rule)
    throw new EgressRuleError(String(rule), GRAMMAR);
  const v6 = /^\[([^\]]+)\](?::([^:]*))?$/.exec(rule);
  if (v6) {
    const [addr = "", bits] = (v6[1] ?? "").split("/");
    if (isIP(addr) !== 6 || (bits !== undefined && !(/^\d{1,3}$/.test(bits) && Number(bits) <= 128)))
      throw new EgressRuleError(rule, GRAMMAR);
    port(v6[2], rule);
    return undefined;
  }
  const parts = rule.split(":");
  if (parts.length > 2) {
    if (isIP(rule.split("/")[0] ?? "") === 6) return undefined;
    throw new EgressRuleError(rule, GRAMMAR);
  }
  const target = parts[0] ?? "";
  const p = port(parts[1], rule);
  if (/^[\d./]+$/.test(target)) {
    const cidr = normaliseCidr(target);
    if (!cidr) throw new EgressRuleError(rule, GRAMMAR);
    const priv = PRIVATE_RANGES.find((r) => cidrWithin(cidr, r));
    if (priv && !privateEgress.some((a) => cidrWithin(cidr, a)))
      throw new EgressRuleError(
        rule,
        `${cidr} is in the private range ${priv}, which sandboxes reach only when the operator lists it in CREATEOS_SANDBOX_PRIVATE_EGRESS`,
      );
    return p === undefined ? { cidr } : { cidr, port: p };
  }
  const subdomains = target.startsWith("*.");
  const name = (subdomains ? target.slice(2) : target).toLowerCase().replace(/\.$/, "");
  if (name.length > 253 || !name.split(".").every((l) => LABEL.test(l)) || /^[\d.]+$/.test(name))
    throw new EgressRuleError(rule, GRAMMAR);
  return p === undefined ? { name, subdomains } : { name, subdomains, port: p };
}

/** A rule list → its policy; throws {@link EgressRuleError} naming the first bad rule. */
export function egressPolicy(
  rules: readonly string[] | null | undefined,
  privateEgress: readonly string[] = [],
): EgressPolicy {
  const nets: NetRule[] = [];
  const names: NameRule[] = [];
  let all = !rules || rules.length === 0;
  for (const r of rules ?? []) {
    const parsed = parseEgressRule(r, privateEgress);
    if (parsed === null) all = true;
    else if (parsed && "cidr" in parsed) nets.push(parsed);
    else if (parsed) names.push(parsed);
  }
  return all ? { all: true } : { all: false, nets, names };
}
