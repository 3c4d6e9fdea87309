/**
 * Guests should reach what the host reaches: the package sources the host itself uses (its Debian
 * archive, its npm registry). When one resolves, as the host resolves it, to an address the guest firewall
 * refuses — typically a TLS-intercepting proxy in a reserved range — a host daemon allows exactly that
 * address (a /32) when it opens, on top of CREATEOS_SANDBOX_PRIVATE_EGRESS, unless
 * CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO=0; nothing else of the refused ranges. The host's own addresses,
 * the sandboxes' and the veths' are never added. `doctor`'s "guest egress" check applies the same rules.
 */
import { lookup } from "node:dns/promises";
import { isIPv4 } from "node:net";
import type { DoctorCheck } from "../doctor.js";
import { debianMirrors } from "../images/rootfs.js";
import { runRaw, which } from "../sys/index.js";
import { NEVER, PRIVATE_EGRESS_ENV, deniedRange, hostAddresses, inCidr } from "./firewall.js";

export const PRIVATE_EGRESS_AUTO_ENV = "CREATEOS_SANDBOX_PRIVATE_EGRESS_AUTO";

/** All name lookups of the package sources together take at most this long (a daemon's open waits). */
export const SOURCES_TIMEOUT_MS = 2000;

export interface Resolved {
  name: string;
  address: string;
}

let npmRegistry: Promise<string | undefined> | undefined;

/** `npm config get registry`, once per process (npm takes ~½ s to start; daemons open many times in tests). */
function npmRegistryUrl(): Promise<string | undefined> {
  npmRegistry ??= (async () => {
    const npm = which("npm");
    if (!npm) return undefined;
    // From "/": in an npm workspace (our repo's root) `npm config` refuses to run (ENOWORKSPACES).
    const r = await runRaw(npm, ["config", "get", "registry"], { timeoutMs: 5000, cwd: "/" });
    return r.code === 0 ? r.stdout.trim() : undefined;
  })();
  return npmRegistry;
}

/** Host names of the package sources this host uses: its Debian mirrors and its npm registry. */
export async function sourceHosts(): Promise<string[]> {
  const urls = debianMirrors("bookworm").map((l) => l.split(/\s+/).find((w) => /^https?:\/\//.test(w)) ?? "");
  const npm = await npmRegistryUrl();
  if (npm) urls.push(npm);
  const hosts = new Set<string>();
  for (const u of urls) {
    try {
      hosts.add(new URL(u).hostname);
    } catch {
      // not a URL (a file: or cdrom: source)
    }
  }
  return [...hosts];
}

/** The IPv4 addresses of `names` as the host resolves them; a name not answered within `timeoutMs` is left out. */
export async function resolveHosts(
  names: readonly string[],
  timeoutMs = SOURCES_TIMEOUT_MS,
): Promise<Resolved[]> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<[]>((r) => {
    timer = setTimeout(() => r([]), timeoutMs);
  });
  const one = (name: string) =>
    Promise.race([lookup(name, { all: true, family: 4 }).catch(() => []), deadline]).then((addrs) =>
      addrs.map(({ address }) => ({ name, address })),
    );
  try {
    return (await Promise.all(names.map(one))).flat();
  } finally {
    clearTimeout(timer);
  }
}

type Verdict = { reach: true } | { reach: false; listable: boolean; why: string };

function verdict(ip: string, privateEgress: readonly string[], host: readonly string[]): Verdict {
  if (host.includes(ip))
    return { reach: false, listable: false, why: "it is an address of this host, which guests never reach" };
  const never = NEVER.find((c) => inCidr(ip, c));
  if (never)
    return {
      reach: false,
      listable: false,
      why: `it is in ${never} (sandboxes, veths), which guests never reach`,
    };
  const range = deniedRange(ip);
  if (!range || privateEgress.some((c) => inCidr(ip, c))) return { reach: true };
  return {
    reach: false,
    listable: true,
    why: `it is in ${range}: list it in ${PRIVATE_EGRESS_ENV} (e.g. ${ip}/32) for guests to use it like the host does`,
  };
}

/** Why a guest cannot reach `ip`, or undefined when it can. */
export function refusedBecause(
  ip: string,
  privateEgress: readonly string[],
  host: readonly string[],
): string | undefined {
  const v = verdict(ip, privateEgress, host);
  return v.reach ? undefined : v.why;
}

/**
 * The private-egress list a host daemon applies: `explicit`, plus a /32 for each of `resolved` (the
 * host's package sources' addresses) that the firewall would refuse and that may be listed at all (not a
 * host, sandbox or veth address). `added` is what was added.
 */
export function withPackageSources(
  resolved: readonly string[],
  explicit: readonly string[],
  host: readonly string[],
): { privateEgress: string[]; added: string[] } {
  const added: string[] = [];
  for (const ip of new Set(resolved)) {
    if (!isIPv4(ip)) continue;
    const v = verdict(ip, [...explicit, ...added], host);
    if (!v.reach && v.listable) added.push(`${ip}/32`);
  }
  return { privateEgress: [...explicit, ...added], added };
}

/** Whether the daemon adds the package sources' addresses by itself (the default). */
export function autoPrivateEgress(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[PRIVATE_EGRESS_AUTO_ENV]?.trim() !== "0";
}

/**
 * The list `LocalHostDaemon.open` applies: `explicit` plus the refused addresses of the host's package
 * sources as it resolves them now (bounded by {@link SOURCES_TIMEOUT_MS}), unless turned off.
 */
export async function hostPrivateEgress(
  explicit: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ privateEgress: string[]; added: string[] }> {
  if (!autoPrivateEgress(env)) return { privateEgress: [...explicit], added: [] };
  const resolved = await resolveHosts(await sourceHosts());
  return withPackageSources(
    resolved.map((r) => r.address),
    explicit,
    hostAddresses(),
  );
}

/**
 * `doctor`'s "guest egress": can guests reach the addresses the package sources resolve to, on the host
 * (`hostResolved`) and at a sandbox's resolver (`guestResolved`, when probed), under the list a daemon
 * would apply (`explicit`, plus the host-resolved addresses when `auto`)?
 */
export function egressCheck(o: {
  hostResolved: readonly Resolved[];
  guestResolved: readonly Resolved[];
  explicit: readonly string[];
  auto: boolean;
  host: readonly string[];
}): DoctorCheck {
  const check = "guest egress";
  const { privateEgress, added } = o.auto
    ? withPackageSources(
        o.hostResolved.map((r) => r.address),
        o.explicit,
        o.host,
      )
    : { privateEgress: [...o.explicit], added: [] };
  const all = [...o.hostResolved, ...o.guestResolved];
  const seen = new Set<string>();
  const problems: string[] = [];
  const reached: string[] = [];
  for (const { name, address } of all) {
    const key = `${name} (${address})`;
    if (seen.has(key)) continue;
    seen.add(key);
    const why = refusedBecause(address, privateEgress, o.host);
    if (why) problems.push(`guests cannot reach ${key}: ${why}`);
    else reached.push(key);
  }
  if (problems.length > 0) return { check, ok: false, detail: problems.join("; ") };
  if (reached.length === 0)
    return { check, ok: true, detail: "no package source of the host resolved; nothing to compare" };
  const auto =
    added.length > 0
      ? `; allowed as the host's package sources (${PRIVATE_EGRESS_AUTO_ENV}): ${added.join(", ")}`
      : "";
  return { check, ok: true, detail: `guests reach the host's package sources: ${reached.join(", ")}${auto}` };
}
