/**
 * The address plan: every address, name and netmask a sandbox's network uses, in one place. The host
 * networking (net/index.ts) builds it, the guest image (images/rootfs.ts, images/cmdline.ts) bakes the
 * guest's side of it in, and the VMM gives the NIC its MAC.
 *
 * Each sandbox runs in its own network namespace, so every guest can have the same inside address and a
 * restored or forked VM needs no re-addressing (E2B's design, packages/orchestrator/pkg/sandbox/network):
 *
 *   guest eth0        169.254.0.21/30   kernel `ip=`, MAC 02:fc:00:00:00:01: identical in every VM
 *   tap0 (in netns)   169.254.0.22/30   the guest's gateway (and its DNS server in /etc/resolv.conf),
 *                                       MAC 02:fc:00:00:00:02 in every namespace
 *   netns csb-<slot>  veth "v0"         10.200.<4·slot+2>/30  ─┐ a /30 per slot inside 10.200.0.0/16
 *   root ns           veth "csbv<slot>" 10.200.<4·slot+1>/30  ─┘ (slot = 1…16383)
 *   root ns lo        10.200.0.1/32     the name proxy for HTTP/TLS (net/proxy.ts) and the disk proxy (disks/);
 *                                       slot 0 is never a slot
 *   sandbox address   10.201.<slot>     `ip` in the API: the namespace DNATs it to 169.254.0.21 and SNATs
 *                                       the guest's traffic to it; the root namespace routes each
 *                                       10.201.<slot>/32 via the slot's veth
 *
 * Outbound traffic from 10.201.0.0/16 is masqueraded by the root namespace. What a guest may send (only
 * from its own MAC and address, only to the outside world) is the firewall's, net/firewall.ts. The two octets after 10.200
 * and 10.201 are the slot (or 4·slot+n) written big-endian, so 16383 slots fill 10.200.0.0/16 exactly.
 */
import { HostdError } from "@createos-sandbox/protocol";

/** The guest's own address, the same in every VM. */
export const GUEST_IP = "169.254.0.21";
/** tap0's address inside the namespace: the guest's gateway and DNS server. */
export const GATEWAY_IP = "169.254.0.22";
/** The /30 that guest and gateway share, as the kernel's `ip=` wants it. */
export const GUEST_NETMASK = "255.255.255.252";
export const GUEST_MAC = "02:fc:00:00:00:01";
/**
 * tap0's MAC, the same in every namespace: a resumed or forked guest keeps its ARP entry for the gateway,
 * which must stay valid in the namespace it lands in (else it talks to a MAC that is gone until the entry
 * expires, tens of seconds).
 */
export const GATEWAY_MAC = "02:fc:00:00:00:02";
/** The TAP device inside each sandbox namespace. */
export const TAP = "tap0";
/** The namespace end of the veth pair. */
export const NS_VETH = "v0";
/** Sandbox addresses, one per slot: what the root namespace masquerades. */
export const SANDBOX_NET = "10.201.0.0/16";
/** Both ends of every slot's veth pair. */
export const VETH_NET = "10.200.0.0/16";
export const MAX_SLOT = 16383;
/**
 * The name proxy's address (net/proxy.ts): slot 0 of the veth range, which no slot uses, on the root
 * namespace's loopback.
 */
export const PROXY_IP = "10.200.0.1";

const NETNS_PREFIX = "csb-";
/** Root-namespace ends of the veth pairs are named this plus the slot (`csbv*` matches all of them). */
export const HOST_VETH_PREFIX = "csbv";

export const netnsName = (slot: number) => `${NETNS_PREFIX}${slot}`;
export const hostVeth = (slot: number) => `${HOST_VETH_PREFIX}${slot}`;

/** The slot of a namespace named by {@link netnsName}, or undefined for any other name. */
export function slotOfNetns(name: string): number | undefined {
  const m = /^csb-(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The kernel command line's static address for the guest's eth0 (no DHCP: the address never changes). */
export function guestIpParam(): string {
  return `ip=${GUEST_IP}::${GATEWAY_IP}:${GUEST_NETMASK}::eth0:off`;
}

function addr16(prefix: string, n: number): string {
  return `${prefix}.${(n >> 8) & 255}.${n & 255}`;
}

export interface SlotAddrs {
  slot: number;
  netns: string;
  hostVeth: string;
  /** Root-namespace end of the veth. */
  hostIp: string;
  /** Namespace end of the veth. */
  nsIp: string;
  /** The sandbox address (`ip` in the API). */
  sandboxIp: string;
}

export function slotAddrs(slot: number): SlotAddrs {
  if (!Number.isInteger(slot) || slot < 1 || slot > MAX_SLOT)
    throw new HostdError("internal", `bad slot ${slot}`);
  return {
    slot,
    netns: netnsName(slot),
    hostVeth: hostVeth(slot),
    hostIp: addr16("10.200", 4 * slot + 1),
    nsIp: addr16("10.200", 4 * slot + 2),
    sandboxIp: addr16("10.201", slot),
  };
}
