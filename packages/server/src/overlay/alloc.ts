/**
 * Overlay address plan (issue 12): the deployment's pool `CREATEOS_SANDBOX_OVERLAY_CIDR` is cut into one
 * /24 per network, slot by slot; slot `k` is VXLAN VNI `k + 1`. In a /24, `.0` and `.255` are the network
 * and broadcast addresses and `.1` is kept back for the host side of the datapath (a gateway or resolver
 * it may want there), so members get `.2` … `.254`.
 */

/** The pool as numbers: its first address and how many /24 slots it holds. */
export interface OverlayPool {
  cidr: string;
  base: number;
  slots: number;
}

export const FIRST_MEMBER_HOST = 2;
export const LAST_MEMBER_HOST = 254;
/** Members one network can hold: one per member address of its /24. */
export const MEMBERS_PER_NETWORK = LAST_MEMBER_HOST - FIRST_MEMBER_HOST + 1;
/** VXLAN's VNI is 24 bits; 0 is not used. */
const MAX_VNI = 0xffffff;

function parseIp(s: string): number | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    n = n * 256 + Number(p);
  }
  return n;
}

export function ipText(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** The pool of a setting, or an Error naming the setting and what is wrong. */
export function parsePool(cidr: string, setting = "CREATEOS_SANDBOX_OVERLAY_CIDR"): OverlayPool {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr.trim());
  const ip = m ? parseIp(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : Number.NaN;
  if (ip === undefined || !(prefix >= 8 && prefix <= 24))
    throw new Error(`${setting} must be an IPv4 CIDR from /8 to /24 (e.g. 10.240.0.0/12), got ${cidr}`);
  const size = 2 ** (32 - prefix);
  if (ip % size !== 0) throw new Error(`${setting}: ${cidr} has host bits set`);
  return { cidr: `${ipText(ip)}/${prefix}`, base: ip, slots: Math.min(size / 256, MAX_VNI) };
}

/** The subnet and VNI of a slot of the pool. */
export function slotOf(pool: OverlayPool, slot: number): { cidr: string; vni: number } {
  return { cidr: `${ipText(pool.base + slot * 256)}/24`, vni: slot + 1 };
}

/** The lowest slot whose subnet and VNI no network holds, or undefined when the pool is full. */
export function freeSlot(
  pool: OverlayPool,
  taken: { cidrs: ReadonlySet<string>; vnis: ReadonlySet<number> },
): { cidr: string; vni: number } | undefined {
  for (let k = 0; k < pool.slots; k++) {
    const s = slotOf(pool, k);
    if (!taken.cidrs.has(s.cidr) && !taken.vnis.has(s.vni)) return s;
  }
  return undefined;
}

/** The lowest member address of a /24 `cidr` not in `taken`, or undefined when it is full. */
export function freeMemberIp(cidr: string, taken: ReadonlySet<string>): string | undefined {
  const base = parseIp(cidr.split("/")[0]!)!;
  for (let h = FIRST_MEMBER_HOST; h <= LAST_MEMBER_HOST; h++) {
    const ip = ipText(base + h);
    if (!taken.has(ip)) return ip;
  }
  return undefined;
}
