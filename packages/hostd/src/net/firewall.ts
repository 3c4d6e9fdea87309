/**
 * The guest firewall: what a sandbox may send, enforced on the host (never in the guest, which runs
 * untrusted code as root). It relies on the address plan of net/plan.ts:
 *
 *   guest eth0 169.254.0.21, MAC 02:fc:00:00:00:01 ── tap0 169.254.0.22 ─┐ netns csb-<slot>
 *                                                       v0 10.200.<4·slot+2> ─┐ SNAT → 10.201.<slot>
 *   root ns:                                       csbv<slot> 10.200.<4·slot+1> ─┘ masquerade → world
 *
 * Everything a guest sends enters the host through its tap0, inside its own namespace, so the rules live
 * there and apply to nothing else: the host's own traffic, and the namespace's own (the DNS resolver's
 * upstream queries, net/dns.ts), never cross tap0 and are not filtered. A namespace outlives the daemon,
 * so its rules do too; a daemon that re-adopts a VM replaces them atomically with its current settings.
 *
 * In each sandbox namespace (one `nft -f` batch: both tables replaced at once, no gap):
 *
 *   table netdev createos_antispoof, chain tap0 (ingress hook of tap0, before anything else; policy drop)
 *     ether saddr != 02:fc:00:00:00:01                           drop     (a forged MAC)
 *     arp, sender MAC 02:fc:00:00:00:01 and sender IP 169.254.0.21 accept
 *     ip saddr 169.254.0.21                                      accept
 *     ip (any other source), tcp                                 reject with tcp reset
 *     ip (any other source)                                      reject with icmp admin-prohibited
 *     ip6                                                        reject (tcp reset / icmpv6 admin-prohibited):
 *                                                                guests get no IPv6 at all
 *     anything else (VLAN tags, other ethertypes)                drop (policy)
 *
 *   table inet createos_fw
 *     chain input (to the namespace itself, from tap0):
 *       ct state established,related accept
 *       ct status dnat accept                                    (our own redirects, e.g. DNS to the resolver)
 *       169.254.0.22 udp/tcp port 53 accept                     (the resolver, net/dns.ts)
 *       anything else                                            → refuse
 *     chain forward (through the namespace, from tap0):
 *       ct state established,related accept                     (replies on connections made to the guest)
 *       a new flow past GUEST_FLOWS (4,096) open                 → refuse (the root's conntrack table is shared)
 *       not IPv4                                                 → refuse
 *       out a private network's veth (ov*, net/overlay.ts)        accept (routed there only for a subnet the
 *                                                                sandbox is a member of; the overlay table
 *                                                                guards the rest)
 *       tcp to 10.200.0.1 that our own DNAT sent there           accept (name proxy net/proxy.ts, disk proxy disks/)
 *       daddr in @never: 10.200.0.0/16, 10.201.0.0/16            → refuse (other sandboxes and veths, always)
 *       daddr in @host (the host's addresses when the rules were set) → refuse (always; see the root table)
 *       daddr in @private_egress                                 accept (CREATEOS_SANDBOX_PRIVATE_EGRESS, plus
 *                                                                the host's package sources: net/egresscheck.ts)
 *       daddr in @denied (see DENIED below)                      → refuse
 *       anything else                                            accept (the outside world)
 *     chain refuse: tcp → reject with tcp reset; else reject with icmpx admin-prohibited
 *
 * In the root namespace, `table inet createos_fw` (shared by every daemon on the host, replaced at start and
 * whenever a daemon's settings differ from what its process last wrote). Everything that arrives by a
 * sandbox veth is matched by its device, `iifname "csbv*"`, not by its source: besides the guest (10.201,
 * after the namespace's SNAT) the namespace itself sends — its resolver and, should it be compromised, the
 * VM's QEMU, which lives in the namespace and may open sockets (seccomp allows connect) with any of the
 * namespace's addresses: 10.200.<4·slot+2>, 169.254.0.22 on tap0, a private network's address, or an IPv6
 * link-local one on v0. Each of those must reach only what the design needs:
 *     input (to the host itself), iifname "csbv*":
 *       ct state established,related                           accept (answers on connections the host made)
 *       saddr 10.201.0.0/16, tcp to 10.200.0.1                 accept (the proxies' address: names, net/proxy.ts,
 *                                                              and disks, disks/; the guest gets there only by its
 *                                                              namespace's DNAT, which names the proxies' ports)
 *       saddr 10.200.0.0/16 to a DNS upstream ip:port (udp/tcp) accept (the resolvers, net/dns.ts, when
 *                                                              CREATEOS_SANDBOX_DNS_SERVERS names a local address)
 *       anything else                                          → refuse (every local address of the host,
 *              whatever it is now — public, LAN, 0.0.0.0 and [::] listeners, 10.200.0.1's other ports —
 *              even when CREATEOS_SANDBOX_PRIVATE_EGRESS lists it). @host above refuses the guest the same
 *              in the namespace, because the kernel rate-limits the ICMP errors of one namespace to one peer
 *              (6, then 1 a second) and the root's limit is the host's to set; this table is the backstop
 *              for addresses the host gained later, and the only guard against the namespace's own sockets.
 *     forward (through the host), iifname "csbv*":
 *       udp to a port in @vxlan_ports (4789 and the daemon's own overlay port), whatever the destination and
 *                                                              source → refuse (no guest or namespace frames
 *                                                              into a private network on any host, net/overlay.ts)
 *       ct state established,related                           accept
 *       out another veth, "csbv*"                              → refuse (sandbox to sandbox, any source)
 *       saddr 10.201.0.0/16                                    accept (the guest: its namespace filtered it)
 *       saddr 10.200.0.0/16 to a DNS upstream ip:port (udp/tcp) accept (the resolvers' queries, masqueraded
 *                                                              by `table ip createos_dns`, net/dns.ts)
 *       anything else                                          → refuse (the namespace's own sockets reach no
 *                                                              one else, IPv6 included)
 * A daemon's private networks add their own root table (`createos_overlay_<tag>`, net/overlayplan.ts): its
 * peers' VXLAN endpoints are refused to the veths like host addresses, and VXLAN to its own port is taken
 * only from the remotes of the network (VNI) it names.
 *
 * Refusals answer at once (reset / ICMP unreachable), so a client fails in milliseconds instead of
 * waiting for a timeout; the namespace's `net.ipv4.icmp_ratelimit` is 0 so that every refusal is
 * answered. The self-signal API (127.0.0.1:1029) is inside the guest and needs no rule.
 */
import { isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";
import { HostdError } from "@createos-sandbox/protocol";
import { PRIVATE_RANGES } from "@createos-sandbox/protocol/egress";
import { nft, sysctl } from "../sys/index.js";
import type { Upstream } from "./dns.js";
import { OVERLAY_DEV_PREFIX } from "./overlayplan.js";
import {
  GATEWAY_IP,
  GUEST_IP,
  GUEST_MAC,
  HOST_VETH_PREFIX,
  PROXY_IP,
  SANDBOX_NET,
  TAP,
  VETH_NET,
} from "./plan.js";

export const PRIVATE_EGRESS_ENV = "CREATEOS_SANDBOX_PRIVATE_EGRESS";

/**
 * Destinations no guest reaches unless the operator lists them (the list lives with the egress rules, which
 * refuse a rule inside one of them): IANA's special-purpose ranges that are not
 * globally routable (RFC 6890 and successors) plus multicast: this network, RFC 1918, CGNAT, loopback,
 * link-local (cloud metadata at 169.254.169.254), IETF protocol assignments, the documentation nets, the
 * 6to4 relay anycast, benchmarking, multicast, reserved and limited broadcast.
 */
export const DENIED: readonly string[] = PRIVATE_RANGES;

/** Never reachable from a guest, whatever the operator lists: the veths and every sandbox's address. */
export const NEVER = [VETH_NET, SANDBOX_NET];

/** VXLAN's IANA port: refused to guests whatever port this daemon's own endpoint has. */
export const VXLAN_PORT = 4789;

export interface FirewallConfig {
  /** CIDRs inside {@link DENIED} that guests may reach anyway (normalised `a.b.c.d/n`). */
  privateEgress: string[];
  /** UDP ports no sandbox sends to, whatever the destination: VXLAN's, {@link VXLAN_PORT} and the overlay's. */
  vxlanPorts: number[];
}

export const DEFAULT_FIREWALL: FirewallConfig = { privateEgress: [], vxlanPorts: [VXLAN_PORT] };

/** `a.b.c.d` or `a.b.c.d/n` → the network in `a.b.c.d/n` form (host bits cleared, as nft wants it). */
export function parseCidr(s: string): string {
  const m = /^([0-9.]+)(?:\/(\d{1,2}))?$/.exec(s.trim());
  const bits = m?.[2] === undefined ? 32 : Number(m[2]);
  if (!m?.[1] || !isIPv4(m[1]) || bits > 32)
    throw new HostdError("bad_request", `${PRIVATE_EGRESS_ENV}: "${s}" is not an IPv4 address or CIDR`);
  const n = toInt(m[1]);
  const size = 2 ** (32 - bits);
  const net = Math.floor(n / size) * size;
  const ip = [24, 16, 8, 0].map((sh) => Math.floor(net / 2 ** sh) % 256).join(".");
  return `${ip}/${bits}`;
}

function toInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Whether IPv4 `ip` lies in `cidr` (`a.b.c.d/n`): the one matcher for the lists above. */
export function inCidr(ip: string, cidr: string): boolean {
  const [net = "", bits = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(net) / size);
}

/** The range of {@link DENIED} that `ip` lies in, if any (whether or not it is listed as private egress). */
export function deniedRange(ip: string): string | undefined {
  return isIPv4(ip) ? DENIED.find((c) => inCidr(ip, c)) : undefined;
}

/**
 * The firewall settings: `privateEgress` when given, else `$CREATEOS_SANDBOX_PRIVATE_EGRESS` (comma-separated);
 * `overlayPort` is the daemon's VXLAN port (overlay.ts), refused to guests with {@link VXLAN_PORT}.
 */
export function firewallConfig(
  privateEgress?: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  overlayPort?: number,
): FirewallConfig {
  const list = privateEgress ?? (env[PRIVATE_EGRESS_ENV] ?? "").split(",");
  const ports = overlayPort === undefined ? [VXLAN_PORT] : [VXLAN_PORT, overlayPort];
  return {
    privateEgress: list.filter((s) => s.trim() !== "").map(parseCidr),
    vxlanPorts: [...new Set(ports)].sort((a, b) => a - b),
  };
}

function v4set(name: string, elements: readonly string[]): string {
  const el = elements.length > 0 ? `\n    elements = { ${elements.join(", ")} }` : "";
  return `  set ${name} {\n    type ipv4_addr; flags interval; auto-merge;${el}\n  }`;
}

const REFUSE = `  chain refuse {
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }`;

/** Replaces `family name` atomically: declaring it first makes the delete succeed when it is absent. */
function replaceTable(family: string, name: string, body: string): string {
  return `table ${family} ${name}\ndelete table ${family} ${name}\ntable ${family} ${name} {\n${body}\n}\n`;
}

/**
 * Flows a guest may have open at once (new ones past it are refused). Each is a conntrack entry in its
 * namespace and, once masqueraded, one in the root namespace's table, which the host and every sandbox
 * share (nf_conntrack_max, 262,144 here): a guest spraying UDP at random ports would fill it in seconds and
 * the host would drop new connections of everyone. Far above what builds, package managers and browsers
 * keep open.
 */
export const GUEST_FLOWS = 4096;

/** The nft script of a sandbox namespace's two tables (see the block comment). */
export function slotFirewallScript(
  fw: Pick<FirewallConfig, "privateEgress">,
  host: readonly string[],
  flows = GUEST_FLOWS,
): string {
  const antispoof = `  chain ${TAP} {
    type filter hook ingress device "${TAP}" priority -500; policy drop;
    ether saddr != ${GUEST_MAC} drop
    ether type arp arp saddr ether ${GUEST_MAC} arp saddr ip ${GUEST_IP} accept
    ether type ip ip saddr ${GUEST_IP} accept
    ether type ip meta l4proto tcp reject with tcp reset
    ether type ip reject with icmp type admin-prohibited
    ether type ip6 meta l4proto tcp reject with tcp reset
    ether type ip6 reject with icmpv6 type admin-prohibited
  }`;
  const filter = [
    v4set("never", NEVER),
    v4set("host", host),
    v4set("private_egress", fw.privateEgress),
    v4set("denied", DENIED),
    `  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${TAP}" jump from_guest_to_gateway
  }
  chain from_guest_to_gateway {
    ct state established,related accept
    ct status dnat accept
    ip daddr ${GATEWAY_IP} udp dport 53 accept
    ip daddr ${GATEWAY_IP} tcp dport 53 accept
    goto refuse
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${TAP}" jump from_guest
  }
  chain from_guest {
    ct state established,related accept
    ct state new ct count over ${flows} goto refuse
    meta nfproto != ipv4 goto refuse
    oifname "${OVERLAY_DEV_PREFIX}*" accept
    ip daddr ${PROXY_IP} ct status dnat meta l4proto tcp accept
    ip daddr @never goto refuse
    ip daddr @host goto refuse
    ip daddr @private_egress accept
    ip daddr @denied goto refuse
  }`,
    REFUSE,
  ].join("\n");
  return (
    replaceTable("netdev", "createos_antispoof", antispoof) + replaceTable("inet", "createos_fw", filter)
  );
}

/**
 * The root namespace's table (see the block comment): what may arrive from the sandbox veths. `upstreams`
 * are the resolvers' DNS servers (net/dns.ts), the only destinations of the namespaces' own traffic.
 */
export function rootFirewallScript(
  fw: Pick<FirewallConfig, "vxlanPorts">,
  upstreams: readonly Upstream[],
): string {
  const veths = `"${HOST_VETH_PREFIX}*"`;
  const dns = upstreams.map(
    (u) => `    ip saddr ${VETH_NET} ip daddr ${u.ip} meta l4proto { udp, tcp } th dport ${u.port} accept`,
  );
  return replaceTable(
    "inet",
    "createos_fw",
    [
      `  set vxlan_ports {\n    type inet_service;\n    elements = { ${fw.vxlanPorts.join(", ")} }\n  }`,
      "  chain input {",
      "    type filter hook input priority filter; policy accept;",
      `    iifname ${veths} jump from_sandbox`,
      "  }",
      "  chain from_sandbox {",
      "    ct state established,related accept",
      `    ip saddr ${SANDBOX_NET} ip daddr ${PROXY_IP} meta l4proto tcp accept`,
      ...dns,
      "    goto refuse",
      "  }",
      "  chain forward {",
      "    type filter hook forward priority filter; policy accept;",
      `    iifname ${veths} jump through_host`,
      "  }",
      "  chain through_host {",
      "    udp dport @vxlan_ports goto refuse",
      "    ct state established,related accept",
      `    oifname ${veths} goto refuse`,
      `    ip saddr ${SANDBOX_NET} accept`,
      ...dns,
      "    goto refuse",
      "  }",
      REFUSE,
    ].join("\n"),
  );
}

/** The root namespace's IPv4 addresses now, but for the veths (all of 10.200.0.0/16 is refused anyway). */
export function hostAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? [])
      if (a.family === "IPv4" && !a.address.startsWith("10.200.")) out.add(a.address);
  return [...out].sort();
}

/** Installs (or replaces, atomically) the firewall of a sandbox namespace; tap0 must exist. */
export async function applySlotFirewall(netns: string, fw: FirewallConfig): Promise<void> {
  // The kernel sends at most one ICMP error per second to a peer after a burst of 6, and a refusal that is
  // not answered is a client timeout: in the namespace the only peer is the guest, whose own packets the
  // errors answer (the namespace-wide cap, icmp_msgs_per_sec, still bounds them).
  await sysctl("net.ipv4.icmp_ratelimit", "0", netns);
  await nft(slotFirewallScript(fw, hostAddresses()), netns);
}

/** Installs (or replaces, atomically) the root namespace's part: a script of {@link rootFirewallScript}. */
export async function applyRootFirewall(script: string): Promise<void> {
  await nft(script);
}
