/**
 * Per-sandbox networking, building the address plan of net/plan.ts: a namespace per slot with the guest's
 * TAP, a veth pair to the root namespace and the NAT between the sandbox address and the guest's fixed
 * one. All rules live in nft tables named `createos` (one per sandbox namespace, one in the root
 * namespace) so cleanup removes exactly what we added.
 */
import { existsSync, readdirSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { HostdError } from "@createos-sandbox/protocol";
import type { EgressPolicy } from "@createos-sandbox/protocol/egress";
import { writeJsonAtomic } from "../sys/fs.js";
import { ip, nft, nftCmd, procGone, run, sysctl } from "../sys/index.js";
import {
  type Upstream,
  dnsUpstreams,
  hostsFileOf,
  nonResolverPids,
  resolverServes,
  startResolver,
  stopResolver,
} from "./dns.js";
import { applyEgressTable } from "./egress.js";
import {
  DEFAULT_FIREWALL,
  type FirewallConfig,
  applyRootFirewall,
  applySlotFirewall,
  rootFirewallScript,
} from "./firewall.js";
import { setQuota } from "./meter.js";
import {
  GATEWAY_IP,
  GATEWAY_MAC,
  GUEST_IP,
  HOST_VETH_PREFIX,
  MAX_SLOT,
  NS_VETH,
  PROXY_IP,
  SANDBOX_NET,
  type SlotAddrs,
  TAP,
  netnsName,
  slotAddrs,
  slotOfNetns,
} from "./plan.js";
import type { ProxyPorts } from "./proxy.js";

export {
  GATEWAY_IP,
  GUEST_IP,
  GUEST_MAC,
  MAX_SLOT,
  type SlotAddrs,
  TAP,
  hostVeth,
  netnsName,
  slotAddrs,
} from "./plan.js";
export { type FirewallConfig, firewallConfig } from "./firewall.js";
import { jailIds } from "../vmm/jail.js";

/** Namespaces named csb-N present on the host (including ones a crashed daemon left). */
export function existingSlots(): Set<number> {
  const out = new Set<number>();
  if (!existsSync("/run/netns")) return out;
  for (const name of readdirSync("/run/netns")) {
    const slot = slotOfNetns(name);
    if (slot !== undefined) out.add(slot);
  }
  return out;
}

/**
 * Slot allocator. A slot is taken while a VM record (vm.json) names it, a namespace for it exists, or a
 * caller reserved it in this process; so a restarted daemon never hands out a live VM's slot.
 */
export class SlotAllocator {
  private reserved = new Set<number>();
  private next = 1;

  constructor(private readonly inUse: () => Iterable<number>) {}

  allocate(): number {
    const taken = new Set<number>([...this.reserved, ...this.inUse(), ...existingSlots()]);
    for (let i = 0; i < MAX_SLOT; i++) {
      const s = ((this.next - 1 + i) % MAX_SLOT) + 1;
      if (!taken.has(s)) {
        this.reserved.add(s);
        // Round-robin so a just-freed slot (and its conntrack entries) is not reused at once.
        this.next = (s % MAX_SLOT) + 1;
        return s;
      }
    }
    throw new HostdError("capacity", "no free network slot on this host (16383 sandboxes)");
  }

  release(slot: number): void {
    this.reserved.delete(slot);
  }

  claim(slot: number): void {
    this.reserved.add(slot);
  }
}

let rootReady: Promise<void> | undefined;
/** The root firewall this process last wrote (net/firewall.ts). */
let rootFirewall: string | undefined;

/** The resolvers' upstreams, or none when there are none (then no sandbox starts: startResolver says why). */
function upstreamsOrNone(): Upstream[] {
  try {
    return dnsUpstreams();
  } catch {
    return [];
  }
}

/**
 * Root-namespace setup shared by all sandboxes: forwarding, the masquerade of sandbox traffic (once per
 * process) and the guard of the host and the other sandboxes, net/firewall.ts: replaced when `replace`
 * (a daemon's start: a new daemon's rules win over an older one's, whichever process wrote them) or when
 * what it would be differs from what this process last wrote.
 */
export async function ensureRootNet(fw: FirewallConfig = DEFAULT_FIREWALL, replace = false): Promise<void> {
  rootReady ??= (async () => {
    await sysctl("net.ipv4.ip_forward", "1");
    // The name proxies' address (net/proxy.ts); `replace` makes it idempotent.
    await ip("addr", "replace", `${PROXY_IP}/32`, "dev", "lo");
    const have = await nftCmd(["list", "table", "ip", "createos"]).then(
      () => true,
      () => false,
    );
    if (!have) {
      await nft(`table ip createos {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${SANDBOX_NET} oifname != "${HOST_VETH_PREFIX}*" masquerade
  }
}
`);
    }
  })().catch((e) => {
    rootReady = undefined;
    throw e;
  });
  await rootReady;
  const script = rootFirewallScript(fw, upstreamsOrNone());
  if (script === rootFirewall && !replace) return;
  await applyRootFirewall(script);
  rootFirewall = script;
}

/** Another daemon (or a crash's leftover) holds the slot's namespace: pick another slot. */
export class SlotBusyError extends HostdError {
  constructor(readonly slot: number) {
    super("internal", `network slot ${slot} is in use`);
  }
}

/**
 * Creates namespace, TAP, veth, routes and NAT for `slot`. Creating the namespace is the claim: it fails
 * when the name exists, so two daemons on one host never share a slot (and leftovers are never touched).
 * Cleans up after itself on failure.
 */
export async function setupSlot(slot: number, fw: FirewallConfig = DEFAULT_FIREWALL): Promise<SlotAddrs> {
  const a = slotAddrs(slot);
  await ensureRootNet(fw);
  try {
    await ip("netns", "add", a.netns);
  } catch (e) {
    if (existsSync(`/run/netns/${a.netns}`)) throw new SlotBusyError(slot);
    throw e;
  }
  try {
    const script = [
      "link set lo up",
      // owned by the VM's uid: its jailed QEMU opens it without any capability (vmm/jail.ts)
      `tuntap add dev ${TAP} mode tap user ${jailIds(slot).uid} group ${jailIds(slot).gid}`,
      `link set ${TAP} address ${GATEWAY_MAC}`,
      `addr add ${GATEWAY_IP}/30 dev ${TAP}`,
      `link set ${TAP} up`,
    ].join("\n");
    await run("ip", ["-n", a.netns, "-batch", "-"], { input: `${script}\n` });
    await ip("link", "add", a.hostVeth, "type", "veth", "peer", "name", NS_VETH, "netns", a.netns);
    await run("ip", ["-batch", "-"], {
      input: `addr add ${a.hostIp}/30 dev ${a.hostVeth}\nlink set ${a.hostVeth} up\nroute replace ${a.sandboxIp}/32 via ${a.nsIp} dev ${a.hostVeth}\n`,
    });
    await run("ip", ["-n", a.netns, "-batch", "-"], {
      input: `addr add ${a.nsIp}/30 dev ${NS_VETH}\nlink set ${NS_VETH} up\nroute add default via ${a.hostIp} dev ${NS_VETH}\n`,
    });
    // arp_notify: a private network's veth (net/overlay.ts), made later in this namespace, announces itself
    // with a gratuitous ARP when it comes up, so bridges here and on other hosts learn where it is now.
    await run("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.default.arp_notify=1"], {
      netns: a.netns,
    });
    await nft(
      `table ip createos {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${NS_VETH}" ip daddr ${a.sandboxIp} dnat to ${GUEST_IP}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${NS_VETH}" ip saddr ${GUEST_IP} snat to ${a.sandboxIp}
  }
}
`,
      a.netns,
    );
    // What the guest may send (net/firewall.ts); in place before any VM uses the namespace. Its bytes
    // are counted from the start (net/meter.ts); a metered sandbox's quota is added when it gets the slot.
    await applySlotFirewall(a.netns, fw);
    await setQuota(a.netns, -1);
    // A crash's leftover must not give a new sandbox an old one's private-network names.
    await rm(hostsFileOf(a.netns), { force: true });
    await startResolver(a);
    return a;
  } catch (e) {
    await teardownSlot(slot).catch(() => undefined);
    throw e;
  }
}

/** Removes everything `setupSlot` made. Idempotent: missing pieces are not errors. */
export async function teardownSlot(slot: number): Promise<void> {
  const a = slotAddrs(slot);
  // The resolver is signalled first and awaited last: its exit overlaps the route and link removal.
  const resolverGone = stopResolver(slot).then(
    () => undefined,
    (e: unknown) => e,
  );
  // One `ip` for all three (each process costs a few ms); -force runs every line even when an earlier
  // piece is already gone. Deleting one end of a veth deletes both; deleting the namespace deletes tap0,
  // v0 and its nft table (it lives on until the resolver inside it has exited).
  const netns = `/run/netns/${a.netns}`;
  const lines = [`route del ${a.sandboxIp}/32`, `link del ${a.hostVeth}`];
  if (existsSync(netns)) lines.push(`netns del ${a.netns}`);
  await run("ip", ["-force", "-batch", "-"], { input: `${lines.join("\n")}\n` }).catch(() => undefined);
  const stopFailed = await resolverGone;
  if (stopFailed) throw stopFailed;
  await rm(hostsFileOf(a.netns), { force: true });
  // The batch's errors are not told apart from "already gone": a namespace still there is deleted once
  // more, alone, so that its failure is reported.
  if (existsSync(netns)) await ip("netns", "del", a.netns);
}

/**
 * Puts `policy` in force in the slot's namespace (net/egress.ts): the resolver that served the old names is
 * stopped first, so it cannot pin an address of a name no longer listed into the new sets; then the
 * table is replaced in one batch and the resolver started with the new names.
 */
export async function applyEgress(a: SlotAddrs, policy: EgressPolicy, proxy?: ProxyPorts): Promise<void> {
  if (!resolverServes(a.netns, policy)) await stopResolver(a.slot);
  await applyEgressTable(a.netns, policy, proxy);
  await startResolver(a, policy);
}

const POOL_ALIAS = "createos-pool:";
/** A namespace handed to a VM being started, tagged with the daemon starting it. */
const VM_ALIAS = "createos-vm:";

/**
 * Namespaces pooled by a daemon that died (killed before it could tear its pool down), or handed by it to
 * a VM that never got as far as its record (killed in between): the veth's alias names the owner's pid;
 * reclaimed only when that process is gone and nothing runs inside (a VM's QEMU outlives its daemon).
 */
async function reclaimDeadPools(): Promise<void> {
  const { stdout } = await run("ip", ["-o", "link", "show"]);
  for (const line of stdout.split("\n")) {
    const m = /^\d+: csbv(\d+)@.*\balias createos-(?:pool|vm):(\d+)/.exec(line);
    if (!m) continue;
    const slot = Number(m[1]);
    const pid = Number(m[2]);
    // A killed daemon can linger as a zombie for a moment: that counts as dead.
    if (!procGone(pid)) continue;
    // its own resolver aside, a pooled namespace runs nothing
    const pids = await nonResolverPids(slot).catch(() => [0]);
    if (pids.length > 0) continue;
    await teardownSlot(slot);
  }
}

/**
 * A few namespaces set up ahead of need: building one costs ~100 ms of `ip`/`nft` runs, which would
 * otherwise be most of a warm create's budget. The ready slots are listed in `stateFile` so a restarted
 * daemon removes the ones a crash left behind — and so are the slots being set up, and those handed to a
 * VM whose record does not name them yet (`letGo`): each is in the file before its namespace exists.
 */
export class NetPool {
  private ready: SlotAddrs[] = [];
  /** Slots being set up, or handed to a VM not yet on record. */
  private readonly handed = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private filling: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly alloc: SlotAllocator,
    private readonly target: number,
    private readonly stateFile: string,
    private readonly onError: (e: unknown) => void = () => {},
    readonly fw: FirewallConfig = DEFAULT_FIREWALL,
  ) {}

  /**
   * Removes namespaces an earlier daemon had pooled (they carry no VM), and gives the namespaces of the
   * VMs this daemon re-adopted its own firewall settings.
   */
  async init(isClaimed: (slot: number) => boolean): Promise<void> {
    await ensureRootNet(this.fw, true).catch(this.onError);
    for (const s of existingSlots())
      if (isClaimed(s)) await applySlotFirewall(netnsName(s), this.fw).catch(this.onError);
    await reclaimDeadPools().catch(this.onError);
    let slots: number[] = [];
    try {
      slots = JSON.parse(await readFile(this.stateFile, "utf8")) as number[];
    } catch {
      // no pool file yet
    }
    for (const s of slots)
      if (Number.isInteger(s) && !isClaimed(s)) await teardownSlot(s).catch(this.onError);
    await this.persist();
    this.schedule(0);
  }

  private persisting: Promise<void> = Promise.resolve();

  /** Writes the pooled slots; serialised, so the file always ends up holding the latest list. */
  private persist(): Promise<void> {
    const next = this.persisting.then(() =>
      writeJsonAtomic(this.stateFile, [...this.ready.map((r) => r.slot), ...this.handed]),
    );
    this.persisting = next.catch(() => undefined);
    return next;
  }

  /** A new namespace on a free slot, skipping slots another daemon claims at the same moment. */
  private async fresh(): Promise<SlotAddrs> {
    for (let attempt = 0; ; attempt++) {
      const s = this.alloc.allocate();
      try {
        this.handed.add(s);
        await this.persist();
        return await setupSlot(s, this.fw);
      } catch (e) {
        this.handed.delete(s);
        this.alloc.release(s);
        if (!(e instanceof SlotBusyError) || attempt >= 20) throw e;
      }
    }
  }

  private schedule(delayMs: number): void {
    if (this.closed || this.target <= 0 || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.filling ??= this.fill().finally(() => {
        this.filling = undefined;
      });
    }, delayMs);
    this.timer.unref();
  }

  private async fill(): Promise<void> {
    while (!this.closed && this.ready.length < this.target) {
      try {
        const a = await this.fresh();
        // Tagged with our pid: if this process dies with the namespace still pooled, the next daemon
        // on any data dir reclaims it.
        await ip("link", "set", a.hostVeth, "alias", `${POOL_ALIAS}${process.pid}`).catch(this.onError);
        if (this.closed) {
          await teardownSlot(a.slot);
          this.alloc.release(a.slot);
          return;
        }
        this.ready.push(a);
        this.handed.delete(a.slot);
        await this.persist();
      } catch (e) {
        this.onError(e);
        return;
      }
    }
  }

  /** A ready namespace for a new VM (the caller owns the slot from now on). */
  async acquire(): Promise<SlotAddrs> {
    const a = this.ready.shift() ?? (await this.fresh());
    // Refill once the VM being started has had the CPU to itself for a moment.
    this.schedule(300);
    // From here on a VM owns it; until its record names the slot, the pool file still does.
    this.handed.add(a.slot);
    await Promise.all([this.persist(), ip("link", "set", a.hostVeth, "alias", `${VM_ALIAS}${process.pid}`)]);
    return a;
  }

  /** The pool file stops naming `slot`: the record of the VM it was handed to names it now, or it was freed. */
  async letGo(slot: number): Promise<void> {
    if (this.handed.delete(slot)) await this.persist();
  }

  /** Tears the pooled namespaces down (VMs' own namespaces are left alone). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.filling;
    const left = this.ready.splice(0);
    for (const a of left) {
      await teardownSlot(a.slot).catch(this.onError);
      this.alloc.release(a.slot);
    }
    await this.persist().catch(() => undefined);
  }

  /** Slots currently pooled (not owned by any VM). */
  pooled(): number[] {
    return this.ready.map((r) => r.slot);
  }
}
