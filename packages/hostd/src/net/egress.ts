/**
 * The egress allowlist, enforced in the sandbox's namespace (rules: @createos-sandbox/protocol egress.ts).
 * It adds to the guest firewall (net/firewall.ts), never loosens it: a packet must pass both tables, so
 * other sandboxes, the host and private ranges outside CREATEOS_SANDBOX_PRIVATE_EGRESS stay refused
 * whatever the list says.
 *
 *   table inet createos_egress   (replaced in one `nft -f` batch on every change: atomic, live)
 *     set nets       ipv4_addr, interval                        ip and cidr rules without a port
 *     set net_ports  ipv4_addr . inet_service, interval         ip:port and cidr:port rules
 *     set dns        ipv4_addr, timeout                         addresses the resolver answered for
 *     set dns_p<N>   ipv4_addr, timeout                           host rules (without a port / port N)
 *     chain from_guest (forward hook, iifname tap0, after the firewall's chain):
 *       ct direction reply accept       answers on connections made *to* the guest (ingress)
 *       oifname ov* accept              a private network's members (net/overlay.ts): never allowlisted
 *       daddr in nets / daddr . port in net_ports accept
 *       daddr in dns (but UDP 80/443) / daddr in dns_pN and port N (TCP only for N = 80/443)  accept
 *       update @recent_denied; counter name denied; tcp → reject with tcp reset; else → icmpx
 *       admin-prohibited
 *     set recent_denied  ipv4_addr . inet_proto . inet_service, dynamic, timeout 10m, size 64
 *                        each refused destination (port 0 for protocols without ports, e.g. ICMP),
 *                        its timeout restarted by every refusal: the owner's "last refusals"
 *
 * Every packet the guest originates is checked, not only a connection's first: `ct state established`
 * is never accepted here, so a destination removed from the list is cut at once (its next packet is
 * refused, a TCP peer gets a reset) without a conntrack flush. With no policy (`*`) the table holds only
 * the counter and nothing is checked.
 *
 * HTTP and TLS: with name rules, TCP 80 and 443 to an address pinned for a name (not also allowed by an
 * address rule) is DNATed to the daemon's name proxy (net/proxy.ts; `chain prerouting` → `to_proxy`), which
 * lets it through only when the Host header / SNI is a listed name; `from_guest` accepts that DNAT. UDP 80
 * and 443 to such an address are refused: QUIC would carry any name to a shared (CDN) address unchecked,
 * and clients fall back to TCP. On every other port a name rule allows the name's addresses, whatever
 * name the guest uses for them (an address shared with other names is open to them too on those ports).
 *
 * Names: the sandbox's resolver (net/dns.ts) forwards only the listed names (`host` also covers names
 * under it, as dnsmasq's `/host/` does; `*.host` only those under it) and answers NXDOMAIN for every other
 * name; each address it hands out for a listed name is added by dnsmasq itself (`--nftset`) to `dns` or
 * `dns_p<port>` for the set's timeout, {@link NAME_TTL_S}, refreshed by each upstream answer (dnsmasq
 * caches at most {@link MAX_CACHE_TTL_S}, so a cached answer's address is still in the set). DNS to any
 * other server is redirected to the resolver (net/dns.ts). A listed name that resolves to a private
 * address is pinned like any other, and refused by the firewall unless that range is private egress.
 */
import type { EgressPolicy, NameRule } from "@createos-sandbox/protocol/egress";
import { nft } from "../sys/index.js";
import { OVERLAY_DEV_PREFIX } from "./overlayplan.js";
import { TAP } from "./plan.js";
import { PROXY_IP, type ProxyPorts } from "./proxy.js";

export const EGRESS_TABLE = "createos_egress";
/** How long an address the resolver handed out stays allowed after its last upstream answer, seconds. */
export const NAME_TTL_S = 3600;
/** dnsmasq's cap on cached answers: well under {@link NAME_TTL_S}. */
export const MAX_CACHE_TTL_S = 300;
/** How long a refused destination stays in `recent_denied` after its last refusal, seconds. */
export const RECENT_DENIED_TTL_S = 600;
/**
 * At most this many refused destinations are kept: a full set takes no new ones until one expires (the
 * kernel never evicts), which bounds the memory a guest probing many addresses can make the host spend.
 */
export const RECENT_DENIED_MAX = 64;
export const RECENT_DENIED_SET = "recent_denied";

/** The ports the name proxy checks (TCP only): to a name's addresses, UDP is refused on them. */
const PROXIED_PORTS: readonly number[] = [80, 443];

const setOf = (port: number | undefined) => (port === undefined ? "dns" : `dns_p${port}`);

/** The distinct ports of name rules, "no port" first (`sort` would put undefined last whatever it is told). */
function ports(names: readonly NameRule[]): (number | undefined)[] {
  const list = [...new Set(names.map((n) => n.port ?? 0))].sort((a, b) => a - b);
  return list.map((p) => (p === 0 ? undefined : p));
}

function elements(list: string[]): string {
  return list.length > 0 ? `\n    elements = { ${[...new Set(list)].join(", ")} }` : "";
}

/**
 * The namespace's redirect of TCP 80/443 to an address pinned for a name (and not also allowed by an
 * address rule) to the name proxy (net/proxy.ts), which matches the Host header / SNI against the names.
 */
function proxyChains(policy: { names: readonly NameRule[] }, proxy: ProxyPorts): string[] {
  const lines: string[] = [];
  for (const [dport, to] of [
    [80, proxy.http],
    [443, proxy.tls],
  ] as const)
    for (const p of ports(policy.names))
      if (p === undefined || p === dport)
        lines.push(`    tcp dport ${dport} ip daddr @${setOf(p)} dnat ip to ${PROXY_IP}:${to}`);
  if (lines.length === 0) return [];
  return [
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    iifname "${TAP}" jump to_proxy`,
    "  }",
    "  chain to_proxy {",
    "    ip daddr @nets return",
    "    meta l4proto tcp ip daddr . th dport @net_ports return",
    ...lines,
    "  }",
  ];
}

/** The nft script replacing the namespace's egress table with `policy`'s (see the block comment). */
export function egressScript(policy: EgressPolicy, proxy?: ProxyPorts): string {
  const head = `table inet ${EGRESS_TABLE}\ndelete table inet ${EGRESS_TABLE}\ntable inet ${EGRESS_TABLE} {\n  counter denied {\n  }\n`;
  if (policy.all) return `${head}}\n`;
  const plain = policy.nets.filter((n) => n.port === undefined).map((n) => n.cidr);
  const withPort = policy.nets.filter((n) => n.port !== undefined).map((n) => `${n.cidr} . ${n.port}`);
  const sets = [
    `  set nets {\n    type ipv4_addr; flags interval; auto-merge;${elements(plain)}\n  }`,
    `  set net_ports {\n    type ipv4_addr . inet_service; flags interval;${elements(withPort)}\n  }`,
    ...ports(policy.names).map(
      (p) => `  set ${setOf(p)} {\n    type ipv4_addr; flags timeout; timeout ${NAME_TTL_S}s;\n  }`,
    ),
    `  set ${RECENT_DENIED_SET} {\n    type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout;\n    timeout ${RECENT_DENIED_TTL_S}s; size ${RECENT_DENIED_MAX};\n  }`,
  ];
  // UDP 80/443 (QUIC) to a name's addresses is never accepted: the name proxy sees TCP only, and a QUIC
  // handshake to a shared (CDN) address could name any site on it. Clients fall back to TCP, which it checks.
  const nameRules = ports(policy.names).flatMap((p) => {
    if (p === undefined)
      return [
        "    meta l4proto != udp ip daddr @dns accept",
        `    udp dport != { ${PROXIED_PORTS.join(", ")} } ip daddr @dns accept`,
      ];
    if (PROXIED_PORTS.includes(p)) return [`    tcp dport ${p} ip daddr @${setOf(p)} accept`];
    return [`    meta l4proto { tcp, udp } ip daddr @${setOf(p)} th dport ${p} accept`];
  });
  const chain = [
    "  chain forward {",
    "    type filter hook forward priority filter + 1; policy accept;",
    `    iifname "${TAP}" jump from_guest`,
    "  }",
    "  chain from_guest {",
    "    ct direction reply accept",
    ...(proxy ? [`    ip daddr ${PROXY_IP} ct status dnat accept`] : []),
    `    oifname "${OVERLAY_DEV_PREFIX}*" accept`,
    "    ip daddr @nets accept",
    "    meta l4proto { tcp, udp } ip daddr . th dport @net_ports accept",
    ...nameRules,
    // `update` (not `add`) restarts an element's timeout, so the set's expiries order refusals by recency;
    // a full set makes the statement fail, which ends only this rule: the refusal below still happens.
    `    meta l4proto { tcp, udp } update @${RECENT_DENIED_SET} { ip daddr . meta l4proto . th dport }`,
    `    meta l4proto != { tcp, udp } update @${RECENT_DENIED_SET} { ip daddr . meta l4proto . 0 }`,
    "    counter name denied",
    "    meta l4proto tcp reject with tcp reset",
    "    reject with icmpx type admin-prohibited",
    "  }",
  ];
  const toProxy = proxy && policy.names.length > 0 ? proxyChains(policy, proxy) : [];
  return `${head}${[...sets, ...chain, ...toProxy].join("\n")}\n}\n`;
}

/**
 * The resolver's name options for `policy` (replacing its plain `--server=<upstream>` ones): nothing
 * changes for allow-all; otherwise each listed name goes upstream and fills its sets, the rest is NXDOMAIN.
 * dnsmasq's `/name/` covers the name and every name under it, `/*.name/` only those under it; its
 * `--nftset` knows only the first form, so the sets of `*.name` are filled through `/name/` (the bare name
 * is NXDOMAIN then, so nothing is pinned for it). Rules `name:P` and `*.name:Q` thus share their pins.
 */
export function resolverNameArgs(policy: EgressPolicy, upstreams: readonly string[]): string[] {
  if (policy.all) return upstreams.map((u) => `--server=${u}`);
  const patterns = new Set(policy.names.map((n) => (n.subdomains ? `*.${n.name}` : n.name)));
  const sets = new Map<string, Set<string>>();
  for (const n of policy.names) {
    const list = sets.get(n.name) ?? new Set<string>();
    list.add(`4#inet#${EGRESS_TABLE}#${setOf(n.port)}`);
    sets.set(n.name, list);
  }
  const byName = (a: string, b: string) => a.localeCompare(b);
  const out: string[] = [];
  for (const p of [...patterns].sort(byName)) for (const u of upstreams) out.push(`--server=/${p}/${u}`);
  for (const [name, list] of [...sets].sort(([a], [b]) => byName(a, b)))
    out.push(`--nftset=/${name}/${[...list].sort().join(",")}`);
  out.push("--address=/#/", `--max-cache-ttl=${MAX_CACHE_TTL_S}`);
  return out;
}

/** Replaces the namespace's egress table (atomically: one batch). */
export async function applyEgressTable(
  netns: string,
  policy: EgressPolicy,
  proxy?: ProxyPorts,
): Promise<void> {
  await nft(egressScript(policy, proxy), netns);
}
