/**
 * `doctor`'s guest-network checks: can a guest resolve and reach what the host does? Probed for real: a
 * namespace set up exactly like a sandbox's (its resolver included) asks that resolver for the names the
 * host's package sources use, and the answers are compared with the host's own and with what guests may
 * reach (private and reserved ranges only when listed in `CREATEOS_SANDBOX_PRIVATE_EGRESS`).
 */
import { lookup } from "node:dns/promises";
import { BlockList, isIPv4 } from "node:net";
import type { DoctorCheck } from "../doctor.js";
import { hostTrust } from "../images/trust.js";
import { runRaw, which } from "../sys/index.js";
import { dnsUpstreams } from "./dns.js";
import { existingSlots, setupSlot, teardownSlot } from "./index.js";
import { GATEWAY_IP, MAX_SLOT } from "./plan.js";

/** The two outside services a sandbox most needs: the Debian archive (apt) and the npm registry. */
const PROBE_NAMES = ["deb.debian.org", "registry.npmjs.org"];

/** Ranges a guest may not send to unless listed in CREATEOS_SANDBOX_PRIVATE_EGRESS (issue 8). */
const NOT_PUBLIC: [string, number][] = [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
];

function blockList(cidrs: [string, number][]): BlockList {
  const b = new BlockList();
  for (const [net, len] of cidrs) b.addSubnet(net, len, "ipv4");
  return b;
}

/** CREATEOS_SANDBOX_PRIVATE_EGRESS as (network, prefix) pairs; malformed entries are skipped here. */
export function privateEgress(env: NodeJS.ProcessEnv = process.env): [string, number][] {
  const out: [string, number][] = [];
  for (const s of (env.CREATEOS_SANDBOX_PRIVATE_EGRESS ?? "").split(",")) {
    const [net, len] = s.trim().split("/");
    if (net && isIPv4(net)) out.push([net, len === undefined ? 32 : Number(len)]);
  }
  return out;
}

/** Addresses of `ips` a guest may not send to under the current settings. */
export function unreachableForGuests(ips: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  const blocked = blockList(NOT_PUBLIC);
  const allowed = blockList(privateEgress(env));
  return ips.filter((ip) => isIPv4(ip) && blocked.check(ip, "ipv4") && !allowed.check(ip, "ipv4"));
}

/** The script run inside the namespace: resolves each name at the sandbox resolver, prints JSON. */
const RESOLVE_JS = `const r=new (require("node:dns").promises.Resolver)({timeout:3000,tries:2});r.setServers([process.argv[1]]);
Promise.all(process.argv.slice(2).map(n=>r.resolve4(n).then(a=>[n,a],e=>[n,e.code]))).then(x=>console.log(JSON.stringify(Object.fromEntries(x))))`;

/** A namespace like a sandbox's on a slot no daemon is using (from the top: allocators start at 1). */
async function probeSlot(): Promise<number> {
  const taken = existingSlots();
  for (let s = MAX_SLOT; s > MAX_SLOT - 64; s--) {
    if (taken.has(s)) continue;
    try {
      await setupSlot(s);
      return s;
    } catch (e) {
      if (!(e instanceof Error && /in use/.test(e.message))) throw e;
    }
  }
  throw new Error("no free network slot for the probe");
}

async function resolveFromNamespace(names: string[]): Promise<Record<string, string[] | string>> {
  const slot = await probeSlot();
  try {
    const r = await runRaw(process.execPath, ["-e", RESOLVE_JS, GATEWAY_IP, ...names], {
      netns: `csb-${slot}`,
      timeoutMs: 20_000,
    });
    if (r.code !== 0) throw new Error(r.stderr.trim().split("\n").at(-1) ?? `exit ${r.code}`);
    return JSON.parse(r.stdout) as Record<string, string[] | string>;
  } finally {
    await teardownSlot(slot).catch(() => undefined);
  }
}

export async function guestNetChecks(): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  let upstreams: string;
  try {
    upstreams = dnsUpstreams()
      .map((u) => `${u.ip}:${u.port}`)
      .join(", ");
  } catch (e) {
    return [{ check: "guest dns", ok: false, detail: (e as Error).message }];
  }
  if (!which("dnsmasq"))
    return [
      { check: "guest dns", ok: false, detail: "dnsmasq is not installed (Debian package dnsmasq-base)" },
    ];
  if (process.getuid?.() !== 0)
    return [{ check: "guest dns", ok: false, detail: "not probed: needs root (namespaces)" }];
  try {
    const answers = await resolveFromNamespace(PROBE_NAMES);
    const failed = PROBE_NAMES.filter((n) => !Array.isArray(answers[n]));
    const hostFails: string[] = [];
    for (const n of failed) if (!(await lookup(n, 4).catch(() => undefined))) hostFails.push(n);
    const guestOnly = failed.filter((n) => !hostFails.includes(n));
    out.push(
      guestOnly.length === 0
        ? { check: "guest dns", ok: true, detail: `a sandbox's resolver answers through ${upstreams}` }
        : {
            check: "guest dns",
            ok: false,
            detail: `the host resolves ${guestOnly.join(", ")} but a sandbox's resolver (upstream ${upstreams}) does not: ${guestOnly.map((n) => answers[n]).join(", ")}; set CREATEOS_SANDBOX_DNS_SERVERS`,
          },
    );
    const ips = [...new Set(PROBE_NAMES.flatMap((n) => (Array.isArray(answers[n]) ? answers[n] : [])))];
    const blocked = unreachableForGuests(ips);
    out.push(
      blocked.length === 0
        ? {
            check: "guest egress",
            ok: true,
            detail: `${PROBE_NAMES.join(", ")} resolve to addresses guests may reach`,
          }
        : {
            check: "guest egress",
            ok: false,
            detail: `${PROBE_NAMES.join(", ")} resolve to ${blocked.join(", ")}, a private or reserved range guests may not send to (a proxy?): list it in CREATEOS_SANDBOX_PRIVATE_EGRESS`,
          },
    );
  } catch (e) {
    out.push({
      check: "guest dns",
      ok: false,
      detail: `probe from a network namespace failed: ${(e as Error).message}`,
    });
  }
  try {
    const t = hostTrust();
    out.push({
      check: "guest CA certificates",
      ok: true,
      detail:
        t.certs.length === 0
          ? "the host has no extra CA certificates: images carry Debian's only"
          : `images carry the host's ${t.certs.length} extra CA certificate(s): ${t.certs.map((c) => c.source).join(", ")}`,
    });
  } catch (e) {
    out.push({ check: "guest CA certificates", ok: false, detail: (e as Error).message });
  }
  return out;
}
