/**
 * `doctor`'s guest-network checks: can a guest resolve and reach what the host does? Probed for real: a
 * namespace set up exactly like a sandbox's (its resolver included) asks that resolver for the names the
 * host's package sources use (net/egresscheck.ts), and the answers are compared with the host's own and
 * with what the guest firewall lets through (net/firewall.ts, under the list a daemon would apply).
 */
import type { DoctorCheck } from "../doctor.js";
import { hostTrust } from "../images/trust.js";
import { runRaw, which } from "../sys/index.js";
import { dnsUpstreams } from "./dns.js";
import { type Resolved, autoPrivateEgress, egressCheck, resolveHosts, sourceHosts } from "./egresscheck.js";
import { firewallConfig, hostAddresses } from "./firewall.js";
import { existingSlots, setupSlot, teardownSlot } from "./index.js";
import { GATEWAY_IP, MAX_SLOT } from "./plan.js";

/** Probed when the host names no package source of its own: the two outside services a sandbox most needs. */
const FALLBACK_NAMES = ["deb.debian.org", "registry.npmjs.org"];

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

/** "guest dns": the sandbox resolver, probed from a real namespace, answers what the host resolves. */
async function dnsCheck(
  names: string[],
  hostResolved: Resolved[],
): Promise<{ check: DoctorCheck; guest: Resolved[] }> {
  const check = "guest dns";
  let upstreams: string;
  try {
    upstreams = dnsUpstreams()
      .map((u) => `${u.ip}:${u.port}`)
      .join(", ");
  } catch (e) {
    return { check: { check, ok: false, detail: (e as Error).message }, guest: [] };
  }
  if (!which("dnsmasq"))
    return {
      check: { check, ok: false, detail: "dnsmasq is not installed (Debian package dnsmasq-base)" },
      guest: [],
    };
  if (process.getuid?.() !== 0)
    return { check: { check, ok: false, detail: "not probed: needs root (namespaces)" }, guest: [] };
  let answers: Record<string, string[] | string>;
  try {
    answers = await resolveFromNamespace(names);
  } catch (e) {
    const detail = `probe from a network namespace failed: ${(e as Error).message}`;
    return { check: { check, ok: false, detail }, guest: [] };
  }
  const guest = names.flatMap((name) => {
    const a = answers[name];
    return Array.isArray(a) ? a.map((address) => ({ name, address })) : [];
  });
  const guestOnly = names.filter((n) => !Array.isArray(answers[n]) && hostResolved.some((r) => r.name === n));
  if (guestOnly.length === 0)
    return { check: { check, ok: true, detail: `a sandbox's resolver answers through ${upstreams}` }, guest };
  const detail = `the host resolves ${guestOnly.join(", ")} but a sandbox's resolver (upstream ${upstreams}) does not: ${guestOnly.map((n) => answers[n]).join(", ")}; set CREATEOS_SANDBOX_DNS_SERVERS`;
  return { check: { check, ok: false, detail }, guest };
}

function caCheck(): DoctorCheck {
  const check = "guest CA certificates";
  try {
    const t = hostTrust();
    return {
      check,
      ok: true,
      detail:
        t.certs.length === 0
          ? "the host has no extra CA certificates: images carry Debian's only"
          : `images carry the host's ${t.certs.length} extra CA certificate(s): ${t.certs.map((c) => c.source).join(", ")}`,
    };
  } catch (e) {
    return { check, ok: false, detail: (e as Error).message };
  }
}

/** "guest dns", "guest egress" and "guest CA certificates", for the host's own package sources. */
export async function guestNetChecks(): Promise<DoctorCheck[]> {
  const found = await sourceHosts().catch(() => []);
  const names = found.length > 0 ? found : FALLBACK_NAMES;
  const hostResolved = await resolveHosts(names, 10_000);
  const dns = await dnsCheck(names, hostResolved);
  let egress: DoctorCheck;
  try {
    egress = egressCheck({
      hostResolved,
      guestResolved: dns.guest,
      explicit: firewallConfig().privateEgress,
      auto: autoPrivateEgress(),
      host: hostAddresses(),
    });
  } catch (e) {
    egress = { check: "guest egress", ok: false, detail: (e as Error).message };
  }
  return [dns.check, egress, caCheck()];
}
