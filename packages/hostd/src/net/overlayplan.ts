/**
 * The private networks' (issue 12) names, checks and rule text: pure functions, so the unit tests hold the
 * exact nft scripts and hosts files the datapath (net/overlay.ts) installs. The layout, per host daemon:
 *
 *   netns csb-<slot> (the sandbox's)                     netns csbn-<tag>-<vni> (one per network)
 *     guest 169.254.0.21 ─ tap0                            br0 (bridge, no address)
 *       ├─ SNAT 169.254.0.21 → ip, out ov<vni>     ───────── m<slot> (the veth's other end)
 *       └─ DNAT ip → 169.254.0.21, in ov<vni>              vx0 (VXLAN <vni>, only when there are remotes;
 *     ov<vni>  ip/<prefix>, MAC 02:4f:<ip>, MTU 1450          its UDP socket is the root namespace's,
 *                                                             head-end replication to each remote)
 *
 * `<tag>` is a hash of the daemon's data dir, so two host daemons on one machine never share a network's
 * namespace (each is a "host"; they meet through VXLAN like any two hosts). The member's MAC is derived from
 * its address, unique within the network: a resumed or moved member keeps the MAC its peers' ARP caches
 * hold. The MTU leaves room for VXLAN's 50 bytes on a 1500-byte underlay, the same on every host.
 */
import { isIPv4 } from "node:net";
import { HostdError, type OverlayEndpoint, type OverlayMembership } from "@createos-sandbox/protocol";
import { GUEST_IP, TAP } from "./plan.js";

export const MAX_VNI = 16777215;
export const OVERLAY_MTU = 1450;
/** Sandbox-side devices are `ov<vni>`; rules match them all by this prefix. */
export const OVERLAY_DEV_PREFIX = "ov";
/** Conntrack mark of a flow that crossed an overlay veth: cut if it later leaves any other way. */
export const OVERLAY_CT_MARK = "0x4f560000";
export const OVERLAY_TABLE = "createos_overlay";
/** Ranges no network's subnet may touch: the address plan's own, loopback, link-local, multicast. */
const RESERVED = ["0.0.0.0/8", "10.200.0.0/15", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"];
const LABEL = /^[a-z0-9][a-z0-9-]{0,62}$/i;

export const overlayDev = (vni: number) => `${OVERLAY_DEV_PREFIX}${vni}`;
export const bridgePort = (slot: number) => `m${slot}`;
export const networkNetns = (tag: string, vni: number) => `csbn-${tag}-${vni}`;
export const NETWORK_NETNS_RE = /^csbn-([0-9a-f]+)-(\d+)$/;

function toInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** `02:4f:` and the four octets of `ip`. */
export function memberMac(ip: string): string {
  return ["02", "4f", ...ip.split(".").map((o) => Number(o).toString(16).padStart(2, "0"))].join(":");
}

interface Net {
  base: number;
  size: number;
}

function net(cidr: string): Net {
  const [a = "", b = ""] = cidr.split("/");
  const size = 2 ** (32 - Number(b));
  return { base: Math.floor(toInt(a) / size) * size, size };
}

const overlaps = (x: Net, y: Net) => x.base < y.base + y.size && y.base < x.base + x.size;

const bad = (msg: string): never => {
  throw new HostdError("bad_request", `networks: ${msg}`);
};

function checkEndpoint(e: unknown, where: string): OverlayEndpoint {
  const r = e as Partial<OverlayEndpoint> | null;
  if (typeof r?.addr !== "string" || !isIPv4(r.addr)) bad(`${where}.addr must be an IPv4 address`);
  if (!Number.isInteger(r?.port) || (r?.port ?? 0) < 1 || (r?.port ?? 0) > 65535)
    bad(`${where}.port must be a port number`);
  return { addr: r?.addr as string, port: r?.port as number };
}

/** The prefix length of a well-formed network CIDR (host bits clear, /8 to /30), else `bad_request`. */
function checkCidr(cidr: unknown, where: string): Net {
  const m = typeof cidr === "string" ? /^([0-9.]+)\/(\d{1,2})$/.exec(cidr) : null;
  const bits = Number(m?.[2]);
  if (!m?.[1] || !isIPv4(m[1]) || bits < 8 || bits > 30)
    bad(`${where}.cidr ${JSON.stringify(cidr)} is not an IPv4 CIDR from /8 to /30`);
  const n = net(cidr as string);
  if (n.base !== toInt(m?.[1] ?? "")) bad(`${where}.cidr ${cidr} has host bits set`);
  const clash = RESERVED.find((r) => overlaps(n, net(r)));
  if (clash) bad(`${where}.cidr ${cidr} overlaps ${clash}, which the host reserves`);
  return n;
}

function checkIp(ip: unknown, n: Net, where: string): string {
  if (typeof ip !== "string" || !isIPv4(ip)) bad(`${where} must be an IPv4 address`);
  const v = toInt(ip as string);
  if (v <= n.base || v >= n.base + n.size - 1)
    bad(`${where} ${ip} is not a host address of the network's cidr`);
  return ip as string;
}

/**
 * The memberships, checked (`bad_request` naming the first fault): shapes, VNI range, CIDR form and
 * ranges, addresses inside their CIDR, names usable as DNS labels, and no two memberships sharing a
 * network, a VNI or overlapping subnets (one sandbox routes every subnet it is on).
 */
export function checkMemberships(list: unknown): OverlayMembership[] {
  if (!Array.isArray(list)) return bad("must be a list of memberships");
  const nets: Net[] = [];
  const out: OverlayMembership[] = [];
  list.forEach((x, i) => {
    const m = x as Partial<OverlayMembership> | null;
    const at = `networks[${i}]`;
    if (typeof m?.network_id !== "string" || m.network_id === "") bad(`${at}.network_id must be a string`);
    if (typeof m?.network_name !== "string" || !LABEL.test(m.network_name))
      bad(`${at}.network_name must be a DNS label`);
    if (!Number.isInteger(m?.vni) || (m?.vni ?? 0) < 1 || (m?.vni ?? 0) > MAX_VNI)
      bad(`${at}.vni must be an integer from 1 to ${MAX_VNI}`);
    const n = checkCidr(m?.cidr, at);
    const ip = checkIp(m?.ip, n, `${at}.ip`);
    if (!Array.isArray(m?.peers)) bad(`${at}.peers must be a list`);
    if (!Array.isArray(m?.remotes)) bad(`${at}.remotes must be a list`);
    const peers = (m?.peers ?? []).map((p, j) => {
      const w = `${at}.peers[${j}]`;
      if (typeof p?.sandbox_id !== "string") bad(`${w}.sandbox_id must be a string`);
      if (p?.name !== undefined && (typeof p.name !== "string" || !LABEL.test(p.name)))
        bad(`${w}.name must be a DNS label`);
      const peerIp = checkIp(p?.ip, n, `${w}.ip`);
      return p.name === undefined
        ? { sandbox_id: p.sandbox_id, ip: peerIp }
        : { sandbox_id: p.sandbox_id, name: p.name, ip: peerIp };
    });
    const remotes = (m?.remotes ?? []).map((r, j) => checkEndpoint(r, `${at}.remotes[${j}]`));
    if (out.some((o) => o.network_id === m?.network_id || o.vni === m?.vni))
      bad(`${at} repeats a network or VNI of an earlier membership`);
    if (nets.some((o) => overlaps(o, n))) bad(`${at}.cidr ${m?.cidr} overlaps an earlier membership's`);
    nets.push(n);
    out.push({
      network_id: m?.network_id as string,
      network_name: m?.network_name as string,
      vni: m?.vni as number,
      cidr: m?.cidr as string,
      ip,
      peers,
      remotes,
    });
  });
  return out;
}

export const prefixOf = (cidr: string) => Number(cidr.split("/")[1]);

/**
 * The sandbox namespace's overlay table (replaced whole on every change): the NAT between the guest and
 * each membership's address, and the guards. A flow that crossed an overlay veth is marked; if it later
 * leaves by any other device (its membership was removed and the route fell back to the default), it is
 * dropped, so no overlay flow ever reaches the root namespace. Nothing enters from an overlay veth but
 * what the DNAT sends to the guest.
 */
export function sandboxOverlayScript(list: readonly OverlayMembership[]): string {
  const dnat = list.map((m) => `    iifname "${overlayDev(m.vni)}" ip daddr ${m.ip} dnat to ${GUEST_IP}`);
  const snat = list.map((m) => `    oifname "${overlayDev(m.vni)}" ip saddr ${GUEST_IP} snat to ${m.ip}`);
  const ov = `"${OVERLAY_DEV_PREFIX}*"`;
  const body = [
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    ...dnat,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    ...snat,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter - 5; policy accept;",
    `    iifname ${ov} oifname != "${TAP}" drop`,
    `    oifname ${ov} iifname != "${TAP}" drop`,
    `    iifname ${ov} ct mark set ${OVERLAY_CT_MARK}`,
    `    oifname ${ov} ct mark set ${OVERLAY_CT_MARK}`,
    `    ct mark ${OVERLAY_CT_MARK} iifname != ${ov} oifname != ${ov} drop`,
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    `    iifname ${ov} drop`,
    "  }",
  ];
  return `table ip ${OVERLAY_TABLE}\ndelete table ip ${OVERLAY_TABLE}\ntable ip ${OVERLAY_TABLE} {\n${body.join("\n")}\n}\n`;
}

/**
 * The root namespace's table of one daemon (`createos_overlay_<tag>`), from the memberships of every sandbox
 * it hosts and its VXLAN `endpoint`. Every daemon has its own table, so one's restart never drops another's.
 *   forward, from the sandbox veths (`<vethPrefix>*`, whatever the source):
 *     to a subnet of a network hosted here       → refuse (a sandbox that is no member routes it by the default
 *                                                  route; the guest firewall refuses it first unless the
 *                                                  operator listed the range as private egress)
 *     to a peer's endpoint address (@peers: every remote of those networks) → refuse, like the host's own
 *                                                  addresses: a peer host is no destination for a guest, and
 *                                                  its VXLAN port would take frames for any network there
 *     udp to this daemon's VXLAN port            → refuse (as net/firewall.ts's root table does for 4789 and the
 *                                                  port the daemon started with, which may be another's)
 *   input, VXLAN to this daemon's port carrying the VNI of a network hosted here: dropped unless its source is
 *     one of that network's remotes (the kernel's VXLAN device takes a frame from any source).
 */
export function rootOverlayScript(
  tag: string,
  memberships: readonly OverlayMembership[],
  vethPrefix: string,
  endpoint: OverlayEndpoint,
): string {
  const name = `${OVERLAY_TABLE}_${tag}`;
  // No subnet left: no table (a daemon that hosts no network leaves nothing in the root namespace).
  if (memberships.length === 0) return `table inet ${name}\ndelete table inet ${name}\n`;
  const el = (list: Iterable<string>) => {
    const sorted = [...new Set(list)].sort();
    return sorted.length > 0 ? `\n    elements = { ${sorted.join(", ")} }` : "";
  };
  const remotes = new Map<number, Set<string>>();
  for (const m of memberships) {
    const set = remotes.get(m.vni) ?? new Set<string>();
    for (const r of m.remotes) set.add(r.addr);
    remotes.set(m.vni, set);
  }
  const fromPeers = [...remotes]
    .filter(([, addrs]) => addrs.size > 0)
    .sort(([a], [b]) => a - b)
    .map(
      ([vni, addrs]) =>
        `    udp dport ${endpoint.port} @th,96,24 ${vni} ip saddr != { ${[...addrs].sort().join(", ")} } drop`,
    );
  const veths = `iifname "${vethPrefix}*"`;
  return `table inet ${name}\ndelete table inet ${name}\ntable inet ${name} {
  set nets {
    type ipv4_addr; flags interval; auto-merge;${el(memberships.map((m) => m.cidr))}
  }
  set peers {
    type ipv4_addr; flags interval; auto-merge;${el([...remotes.values()].flatMap((a) => [...a]))}
  }
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    ${veths} ip daddr @nets meta l4proto tcp reject with tcp reset
    ${veths} ip daddr @nets reject with icmpx type admin-prohibited
    ${veths} ip daddr @peers meta l4proto tcp reject with tcp reset
    ${veths} ip daddr @peers reject with icmpx type admin-prohibited
    ${veths} udp dport ${endpoint.port} reject with icmpx type admin-prohibited
  }
  chain input {
    type filter hook input priority filter - 5; policy accept;
${fromPeers.map((l) => `${l}\n`).join("")}  }
}
`;
}

/**
 * The sandbox resolver's extra hosts file (net/dns.ts): each peer with a name as `<name>` and
 * `<name>.<network_name>`, and the sandbox itself (`self`, its hostname, when that is a DNS label) as
 * `<self>.<network_name>` (its bare name is the guest's own /etc/hosts'). A name on two of the sandbox's
 * networks answers both addresses.
 */
export function hostsFile(list: readonly OverlayMembership[], self?: string): string {
  const lines: string[] = [];
  const me = self !== undefined && LABEL.test(self) ? self : undefined;
  for (const m of list) {
    if (me) lines.push(`${m.ip} ${me}.${m.network_name}`);
    for (const p of m.peers) if (p.name) lines.push(`${p.ip} ${p.name}.${m.network_name} ${p.name}`);
  }
  return lines.length > 0 ? `${lines.join("\n")}\n` : "";
}
