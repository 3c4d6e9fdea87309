/**
 * `doctor`'s check that guests reach what the host reaches: the package sources the host itself uses
 * (its Debian archive, its npm registry) are resolved as the host resolves them, and an address the guest
 * firewall refuses (a private or reserved range not in CREATEOS_SANDBOX_PRIVATE_EGRESS — typically a
 * TLS-intercepting proxy in front of the registries) is reported with the setting that fixes it.
 */
import { lookup } from "node:dns/promises";
import type { DoctorCheck } from "../doctor.js";
import { debianMirrors } from "../images/rootfs.js";
import { runRaw, which } from "../sys/index.js";
import { DENIED, PRIVATE_EGRESS_ENV, firewallConfig, hostAddresses } from "./firewall.js";

function toInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Whether IPv4 `ip` lies in `cidr` (`a.b.c.d/n`). */
export function inCidr(ip: string, cidr: string): boolean {
  const [net = "", bits = "32"] = cidr.split("/");
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(ip) / size) === Math.floor(toInt(net) / size);
}

/** Host names of the package sources this host uses. */
async function sourceHosts(): Promise<string[]> {
  const urls = debianMirrors("bookworm").map((l) => l.split(/\s+/).find((w) => /^https?:\/\//.test(w)) ?? "");
  const npm = which("npm");
  if (npm) {
    const r = await runRaw(npm, ["config", "get", "registry"], { timeoutMs: 10_000 });
    if (r.code === 0) urls.push(r.stdout.trim());
  }
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

/** Why a guest cannot reach `ip`, or undefined when it can. */
export function refusedBecause(
  ip: string,
  privateEgress: readonly string[],
  host: readonly string[],
): string | undefined {
  if (host.includes(ip)) return "it is an address of this host, which guests never reach";
  const range = DENIED.find((c) => inCidr(ip, c));
  if (!range || privateEgress.some((c) => inCidr(ip, c))) return undefined;
  return `it is in ${range}: list it in ${PRIVATE_EGRESS_ENV} (e.g. ${ip}/32) for guests to use it like the host does`;
}

export async function egressChecks(): Promise<DoctorCheck[]> {
  let privateEgress: string[];
  try {
    privateEgress = firewallConfig().privateEgress;
  } catch (e) {
    return [{ check: "guest egress", ok: false, detail: (e as Error).message }];
  }
  const problems: string[] = [];
  const reached: string[] = [];
  const host = hostAddresses();
  for (const name of await sourceHosts()) {
    const addrs = await lookup(name, { all: true, family: 4 }).catch(() => []);
    for (const { address } of addrs) {
      const why = refusedBecause(address, privateEgress, host);
      if (why) problems.push(`guests cannot reach ${name} (${address}): ${why}`);
      else reached.push(`${name} (${address})`);
    }
  }
  if (problems.length > 0) return [{ check: "guest egress", ok: false, detail: problems.join("; ") }];
  return [
    {
      check: "guest egress",
      ok: true,
      detail:
        reached.length > 0
          ? `guests reach the host's package sources: ${reached.join(", ")}`
          : "no package source of the host resolved; nothing to compare",
    },
  ];
}
