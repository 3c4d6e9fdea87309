/**
 * The private networks' datapath on one host (layout and rule text: net/overlayplan.ts). Every change is
 * declarative: `applyMemberships` makes a sandbox namespace hold exactly the given memberships (veths
 * added, kept or deleted, the NAT table replaced in one batch, the resolver's names rewritten), makes
 * each network's namespace exist while it has a member here, and keeps each network's VXLAN remotes the
 * union of what its local members were told. Work on the host's overlay state is serialised: two
 * sandboxes joining one network at once must not both create its namespace.
 */
import { existsSync, readdirSync } from "node:fs";
import type { OverlayEndpoint, OverlayMembership } from "@createos-sandbox/protocol";
import { ip, nft, run } from "../sys/index.js";
import { reloadHosts } from "./dns.js";
import {
  NETWORK_NETNS_RE,
  OVERLAY_DEV_PREFIX,
  OVERLAY_MTU,
  bridgePort,
  hostsFile,
  memberMac,
  networkNetns,
  overlayDev,
  prefixOf,
  rootOverlayScript,
  sandboxOverlayScript,
} from "./overlayplan.js";
import { HOST_VETH_PREFIX, type SlotAddrs } from "./plan.js";

/** One host daemon's overlay state: its namespaces' tag, its VXLAN endpoint, what each slot is on. */
export class OverlayHost {
  /** The memberships programmed in each sandbox namespace (changed only under {@link serialised}). */
  readonly bySlot = new Map<number, readonly OverlayMembership[]>();
  /** The remotes each network's namespace was last given (what this process knows it holds). */
  readonly remotes = new Map<string, string>();

  constructor(
    readonly tag: string,
    readonly endpoint: OverlayEndpoint,
  ) {}

  /** Every membership of the other slots: the networks this daemon hosts. */
  others(exceptSlot: number): OverlayMembership[] {
    return [...this.bySlot].flatMap(([s, l]) => (s === exceptSlot ? [] : l));
  }
}

let queue: Promise<unknown> = Promise.resolve();

/** Runs `fn` after every overlay change before it (a failure does not block the next). */
export function serialised<T>(fn: () => Promise<T>): Promise<T> {
  const p = queue.catch(() => undefined).then(fn);
  queue = p.catch(() => undefined);
  return p;
}

interface Link {
  ifname: string;
  address?: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function links(netns: string, ...filter: string[]): Promise<Link[]> {
  const { stdout } = await run("ip", ["-n", netns, "-j", "addr", "show", ...filter]);
  return stdout.trim() === "" ? [] : (JSON.parse(stdout) as Link[]);
}

/** Whether the sandbox-side device already is this membership's (address, prefix and MAC). */
function matches(l: Link, m: OverlayMembership): boolean {
  const v4 = (l.addr_info ?? []).filter((a) => a.family === "inet");
  return (
    l.address === memberMac(m.ip) &&
    v4.length === 1 &&
    v4[0]?.local === m.ip &&
    v4[0]?.prefixlen === prefixOf(m.cidr)
  );
}

/** The network's namespace with its bridge, made when missing. */
async function ensureNetwork(o: OverlayHost, vni: number): Promise<string> {
  const ns = networkNetns(o.tag, vni);
  if (existsSync(`/run/netns/${ns}`)) return ns;
  await ip("netns", "add", ns);
  await run("ip", ["-n", ns, "-batch", "-"], {
    input: "link set lo up\nlink add br0 type bridge\nlink set br0 up\n",
  });
  o.remotes.set(ns, "");
  return ns;
}

/** A veth between the sandbox namespace and the network's bridge, addressed and up. */
async function attach(o: OverlayHost, a: SlotAddrs, m: OverlayMembership): Promise<void> {
  const ns = await ensureNetwork(o, m.vni);
  const dev = overlayDev(m.vni);
  const port = bridgePort(a.slot);
  await ip(
    "link",
    "add",
    dev,
    "netns",
    a.netns,
    "mtu",
    String(OVERLAY_MTU),
    "address",
    memberMac(m.ip),
    "type",
    "veth",
    "peer",
    "name",
    port,
    "netns",
    ns,
    "mtu",
    String(OVERLAY_MTU),
  );
  // Both ends at once: the address is on before the sandbox end is up, so whichever end comes up last gives
  // the link carrier and the namespace's arp_notify (net/index.ts) a gratuitous ARP with the address.
  await Promise.all([
    run("ip", ["-n", a.netns, "-batch", "-"], {
      input: `addr add ${m.ip}/${prefixOf(m.cidr)} dev ${dev}\nlink set ${dev} up\n`,
    }),
    run("ip", ["-n", ns, "-batch", "-"], { input: `link set ${port} master br0\nlink set ${port} up\n` }),
  ]);
}

/** Like Promise.all, but only once every promise has settled; rejects with the first failure. */
async function settledAll(ps: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(ps)).find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

/** `addr:port` of each head-end replication entry of the network's VXLAN device. */
async function fdbRemotes(ns: string, port: number): Promise<Set<string>> {
  const { stdout } = await run("bridge", ["-n", ns, "-j", "fdb", "show", "dev", "vx0"]);
  const out = new Set<string>();
  for (const e of JSON.parse(stdout || "[]") as { mac: string; dst?: string; port?: number }[])
    if (e.mac === "00:00:00:00:00:00" && e.dst) out.add(`${e.dst}:${e.port ?? port}`);
  return out;
}

/**
 * The network's VXLAN device exists exactly while it has remotes (a network on one host opens no UDP
 * port, and two daemons on one machine sharing a default port never clash on a VNI neither spans), and
 * replicates to exactly `remotes`.
 */
async function syncRemotes(o: OverlayHost, vni: number, remotes: readonly OverlayEndpoint[]): Promise<void> {
  const ns = networkNetns(o.tag, vni);
  const key = remotes
    .map((r) => `${r.addr}:${r.port}`)
    .sort()
    .join(",");
  if (o.remotes.get(ns) === key) return;
  await programRemotes(o, ns, vni, remotes);
  o.remotes.set(ns, key);
}

async function programRemotes(o: OverlayHost, ns: string, vni: number, remotes: readonly OverlayEndpoint[]) {
  const has = (await links(ns, "dev", "vx0").catch(() => [])).length > 0;
  if (remotes.length === 0) {
    if (has) await run("ip", ["-n", ns, "link", "del", "vx0"]);
    return;
  }
  if (!has) {
    // Created from the root namespace into the network's: its UDP socket stays in the root namespace.
    const { addr, port } = o.endpoint;
    await ip(
      ...["link", "add", "vx0", "netns", ns, "mtu", String(OVERLAY_MTU), "type", "vxlan", "id", String(vni)],
      ...["dstport", String(port), "local", addr, "nolearning"],
    );
    await run("ip", ["-n", ns, "-batch", "-"], { input: "link set vx0 master br0\nlink set vx0 up\n" });
  }
  const want = new Set(remotes.map((r) => `${r.addr}:${r.port}`));
  const have = await fdbRemotes(ns, o.endpoint.port);
  const lines: string[] = [];
  for (const r of want) if (!have.has(r)) lines.push(`fdb append ${fdbEntry(r)}`);
  for (const r of have) if (!want.has(r)) lines.push(`fdb del ${fdbEntry(r)}`);
  if (lines.length > 0) await run("bridge", ["-n", ns, "-batch", "-"], { input: `${lines.join("\n")}\n` });
}

function fdbEntry(addrPort: string): string {
  const i = addrPort.lastIndexOf(":");
  return `00:00:00:00:00:00 dev vx0 dst ${addrPort.slice(0, i)} port ${addrPort.slice(i + 1)}`;
}

/** The root table each daemon (by tag) last wrote. */
const rootScripts = new Map<string, string>();

/**
 * The daemon's root-namespace guard of every subnet it hosts, its peers' endpoints and its VXLAN port
 * (rewritten only when what it would be changes).
 */
async function syncRoot(o: OverlayHost, all: readonly OverlayMembership[]): Promise<void> {
  const script = rootOverlayScript(o.tag, all, HOST_VETH_PREFIX, o.endpoint);
  if (script === rootScripts.get(o.tag)) return;
  await nft(script);
  rootScripts.set(o.tag, script);
}

/**
 * Brings every network in `vnis` in line with the memberships left on this host: its remotes are their
 * union, and a network with no member here loses its namespace (bridge and VXLAN device with it). The
 * root table follows `all` whatever happened to the networks: a failed step there must not leave the
 * guard of a subnet no member is on any more.
 */
async function settleNetworks(o: OverlayHost, vnis: Iterable<number>, all: readonly OverlayMembership[]) {
  try {
    await settleEach(o, vnis, all);
  } finally {
    await syncRoot(o, all);
  }
}

async function settleEach(o: OverlayHost, vnis: Iterable<number>, all: readonly OverlayMembership[]) {
  for (const vni of new Set(vnis)) {
    const ns = networkNetns(o.tag, vni);
    const members = all.filter((m) => m.vni === vni);
    if (members.length === 0) {
      if (existsSync(`/run/netns/${ns}`)) await ip("netns", "del", ns);
      o.remotes.delete(ns);
      continue;
    }
    const seen = new Map<string, OverlayEndpoint>();
    for (const r of members.flatMap((m) => m.remotes)) seen.set(`${r.addr}:${r.port}`, r);
    await syncRemotes(o, vni, [...seen.values()]);
  }
}

/**
 * Makes the sandbox namespace `a` hold exactly the memberships `list` (already checked); `self` is the
 * sandbox's own name on its networks.
 */
export function applyMemberships(
  o: OverlayHost,
  a: SlotAddrs,
  list: readonly OverlayMembership[],
  self?: string,
) {
  return serialised(async () => {
    const want = new Map(list.map((m) => [overlayDev(m.vni), m]));
    const have = (await links(a.netns)).filter((l) => l.ifname.startsWith(OVERLAY_DEV_PREFIX));
    const touched = new Set<number>(list.map((m) => m.vni));
    const gone = have.filter((l) => {
      const m = want.get(l.ifname);
      return !m || !matches(l, m);
    });
    // Removed first: a detached member is cut before anything else changes (its veth and bridge port go
    // at once; its flows' later packets meet the table's mark rule).
    if (gone.length > 0)
      await run("ip", ["-n", a.netns, "-batch", "-"], {
        input: `${gone.map((l) => `link del ${l.ifname}`).join("\n")}\n`,
      });
    for (const l of gone) touched.add(Number(l.ifname.slice(OVERLAY_DEV_PREFIX.length)));
    const kept = new Set(have.filter((l) => !gone.includes(l)).map((l) => l.ifname));
    // Independent of each other: the table matches devices by name, whenever they appear. All of them
    // end before this change does (a failure of one must not leave the others running past the queue).
    await settledAll([
      nft(sandboxOverlayScript(list), a.netns),
      reloadHosts(a.netns, hostsFile(list, self)),
      (async () => {
        for (const [dev, m] of want) {
          if (kept.has(dev)) continue;
          await takeOver(o, a.slot, m);
          await attach(o, a, m);
        }
      })(),
    ]);
    if (list.length > 0) o.bySlot.set(a.slot, list);
    else o.bySlot.delete(a.slot);
    await settleNetworks(o, touched, o.others(-1));
  });
}

/**
 * Another slot still holding this address on the network is the same sandbox's previous namespace (a
 * pause whose QEMU is still exiting) or an address the control plane moved: its veth goes first, so that
 * only one bridge port answers for the address.
 */
async function takeOver(o: OverlayHost, slot: number, m: OverlayMembership): Promise<void> {
  for (const [s, list] of o.bySlot) {
    if (s === slot || !list.some((x) => x.vni === m.vni && x.ip === m.ip)) continue;
    await run("ip", ["-n", networkNetns(o.tag, m.vni), "link", "del", bridgePort(s)]).catch(() => undefined);
    const left = list.filter((x) => x.vni !== m.vni);
    if (left.length > 0) o.bySlot.set(s, left);
    else o.bySlot.delete(s);
  }
}

/** After a sandbox namespace (and so its veths) went: its networks lose it (pause, destroy, exit). */
export function releaseMemberships(o: OverlayHost, slot: number) {
  return serialised(async () => {
    const list = o.bySlot.get(slot);
    if (!list) return;
    o.bySlot.delete(slot);
    await settleNetworks(
      o,
      list.map((m) => m.vni),
      o.others(slot),
    );
  });
}

/** The networks' namespaces this daemon has on the host (`tag`'s), by VNI. */
export function networkNamespaces(tag: string): Map<number, string> {
  const out = new Map<number, string>();
  if (!existsSync("/run/netns")) return out;
  for (const name of readdirSync("/run/netns")) {
    const m = NETWORK_NETNS_RE.exec(name);
    if (m?.[1] === tag) out.set(Number(m[2]), name);
  }
  return out;
}

/** At open, after re-adoption: networks none of the re-adopted sandboxes is on are removed. */
export function pruneNetworks(o: OverlayHost): Promise<void> {
  return serialised(async () => {
    // What a previous daemon wrote is not known to this one: the root table is written afresh.
    rootScripts.delete(o.tag);
    await settleNetworks(o, networkNamespaces(o.tag).keys(), o.others(0));
  });
}
