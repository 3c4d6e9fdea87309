/**
 * Bandwidth: the guest's bytes to and from the outside world, counted by the kernel in the sandbox's
 * namespace (no userspace copy of any packet), and a quota on what it sends.
 *
 *   table inet createos_meter     (forward hook, after the firewall's and the allowlist's chains, so only
 *                                  traffic they let through is counted)
 *     ov* accept                  a private network's traffic (net/overlay.ts) is neither counted nor capped
 *     counter tx, rx              guest → outside, outside → guest; read and zeroed by `takeUsage`, with
 *                                  the allowlist's `denied` (net/egress.ts; a rule change, which replaces
 *                                  that table, starts it again from zero)
 *     quota cap { over N bytes }  only when metered: N is what the sandbox may still send; past it every
 *                                  packet from the guest is dropped (exec, files, shells and tunnels do not
 *                                  use the NIC: they are never metered or stopped)
 *     input / output hooks        the guest's traffic to the namespace itself — its DNS, the one service
 *                                  there (the firewall refuses the rest) — counted and capped alike: the
 *                                  resolver forwards what it is asked, so queries reach the outside world,
 *                                  and a guest past its quota could otherwise still talk through DNS
 *
 * The control plane keeps the ledger: it adds each `takeUsage` to its row, and sets the quota to what is
 * left (`setQuota`) when the VM starts, after a recharge, and whenever it wants the cap to match its books.
 * Redeclaring a named counter keeps its count, so the batch that replaces the quota never loses bytes. A
 * namespace outlives the daemon, so do the counters and the quota.
 */
import type { DeniedDestination } from "@createos-sandbox/protocol";
import { nft, nftCmd } from "../sys/index.js";
import { EGRESS_TABLE, RECENT_DENIED_MAX, RECENT_DENIED_SET } from "./egress.js";
import { OVERLAY_DEV_PREFIX } from "./overlayplan.js";
import { TAP } from "./plan.js";

export const METER_TABLE = "createos_meter";
/** The meter's chains and their hooks. */
const HOOKS = [
  ["forward", "forward"],
  ["input", "input"],
  ["output", "output"],
] as const;

/** Bytes since the last take, and whether the quota has stopped the guest. */
export interface Usage {
  egress_bytes: number;
  ingress_bytes: number;
  denied_packets: number;
  capped: boolean;
  /** The allowlist's `recent_denied` set (net/egress.ts): read, never cleared; the last refused first. */
  recent_denied: DeniedDestination[];
}

/**
 * The batch that makes the meter table hold its counters and `remaining` as its quota (`-1`: none):
 * declares what may be missing, then replaces chain and quota in one transaction.
 */
export function meterScript(remaining: number): string {
  const t = `inet ${METER_TABLE}`;
  const lines = [
    `table ${t} {\n  counter tx {\n  }\n  counter rx {\n  }\n${HOOKS.map(([c, h]) => `  chain ${c} {\n    type filter hook ${h} priority filter + 10; policy accept;\n  }\n`).join("")}}`,
    ...HOOKS.map(([c]) => `flush chain ${t} ${c}`),
    // declared first so that the delete succeeds when there is none
    `add quota ${t} cap { over 0 bytes }`,
    `delete quota ${t} cap`,
  ];
  lines.push(`add rule ${t} forward oifname "${OVERLAY_DEV_PREFIX}*" accept`);
  lines.push(`add rule ${t} forward iifname "${OVERLAY_DEV_PREFIX}*" accept`);
  if (remaining >= 0) {
    lines.push(`add quota ${t} cap { over ${Math.floor(remaining)} bytes }`);
    lines.push(`add rule ${t} forward iifname "${TAP}" quota name cap drop`);
    lines.push(`add rule ${t} input iifname "${TAP}" quota name cap drop`);
  }
  lines.push(`add rule ${t} forward iifname "${TAP}" counter name tx`);
  lines.push(`add rule ${t} forward oifname "${TAP}" counter name rx`);
  lines.push(`add rule ${t} input iifname "${TAP}" counter name tx`);
  lines.push(`add rule ${t} output oifname "${TAP}" counter name rx`);
  return `${lines.join("\n")}\n`;
}

/** Puts `remaining` (bytes the guest may still send; -1 = unmetered) in force, atomically. */
export async function setQuota(netns: string, remaining: number): Promise<void> {
  await nft(meterScript(remaining), netns);
}

/** `nft -j reset counters` output → bytes (or packets) per counter name. */
export function parseCounters(json: string): Map<string, { bytes: number; packets: number }> {
  const out = new Map<string, { bytes: number; packets: number }>();
  const doc = JSON.parse(json) as {
    nftables?: { counter?: { name: string; bytes: number; packets: number } }[];
  };
  for (const o of doc.nftables ?? [])
    if (o.counter) out.set(o.counter.name, { bytes: o.counter.bytes, packets: o.counter.packets });
  return out;
}

async function reset(netns: string, table: string): Promise<Map<string, { bytes: number; packets: number }>> {
  const r = await nftCmd(["-j", "reset", "counters", "table", "inet", table], netns).catch(() => undefined);
  return r ? parseCounters(r.stdout) : new Map();
}

/** `nft -j list quota` output → whether it is used up (no quota: never). */
export function quotaExhausted(json: string): boolean {
  const doc = JSON.parse(json) as { nftables?: { quota?: { bytes: number; used: number } }[] };
  const q = doc.nftables?.find((o) => o.quota)?.quota;
  return q !== undefined && q.used >= q.bytes;
}

interface SetElem {
  elem?: { val?: { concat?: unknown[] }; expires?: number };
}

/**
 * `nft -j list set` output of `recent_denied` → its destinations, the longest to live (the last
 * refused, every refusal restarting the same timeout) first. Anything not of the set's shape is skipped.
 */
export function parseRecentDenied(json: string): DeniedDestination[] {
  const doc = JSON.parse(json) as { nftables?: { set?: { elem?: SetElem[] } }[] };
  const elems = doc.nftables?.find((o) => o.set)?.set?.elem ?? [];
  const out: DeniedDestination[] = [];
  for (const e of elems) {
    const parts = e.elem?.val?.concat;
    const [ip, proto, port] = Array.isArray(parts) ? parts : [];
    if (typeof ip !== "string" || (typeof proto !== "string" && typeof proto !== "number")) continue;
    if (typeof port !== "number") continue;
    out.push({ ip, proto: String(proto), port, expires_in_s: e.elem?.expires ?? 0 });
  }
  out.sort((a, b) => b.expires_in_s - a.expires_in_s);
  return out.slice(0, RECENT_DENIED_MAX);
}

/** The set as it is now; none (allow-all has no set, or no table): empty. */
function recentDenied(netns: string): Promise<DeniedDestination[]> {
  return nftCmd(["-j", "list", "set", "inet", EGRESS_TABLE, RECENT_DENIED_SET], netns).then(
    (r) => parseRecentDenied(r.stdout),
    () => [],
  );
}

/**
 * Reads and zeroes the counters (a table that is not there counts nothing), and says whether the quota
 * has stopped the guest. That can happen a little short of the quota in counted bytes: the packet that
 * crosses it is dropped whole, and with segmentation offload one packet is up to 64 KiB.
 */
export async function takeUsage(netns: string): Promise<Usage> {
  const quota = nftCmd(["-j", "list", "quota", "inet", METER_TABLE, "cap"], netns).then(
    (r) => quotaExhausted(r.stdout),
    () => false,
  );
  const [m, e, capped, recent] = await Promise.all([
    reset(netns, METER_TABLE),
    reset(netns, EGRESS_TABLE),
    quota,
    recentDenied(netns),
  ]);
  return {
    egress_bytes: m.get("tx")?.bytes ?? 0,
    ingress_bytes: m.get("rx")?.bytes ?? 0,
    denied_packets: e.get("denied")?.packets ?? 0,
    capped,
    recent_denied: recent,
  };
}
