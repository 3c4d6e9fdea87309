/**
 * The guests' DNS: one resolver per sandbox namespace, the only place a guest's name lookups are answered
 * (the egress allowlist builds its hostname rules on it).
 *
 *   guest ──udp/tcp 53──▶ 169.254.0.22:53 (tap0)   dnsmasq inside netns csb-<slot>: cache, the host's
 *        │                                          /etc/hosts, the private networks' peers (csb-<slot>.hosts,
 *        │                                          net/overlay.ts; re-read on SIGHUP), forwards the rest
 *        └─udp/tcp 53 to any other address──▶ `table inet createos_dns` (namespace, prerouting) redirects
 *                                               it to the same dnsmasq before it can leave
 *   dnsmasq ──▶ upstream (CREATEOS_SANDBOX_DNS_SERVERS, default the host's /etc/resolv.conf)
 *           leaves by the namespace's veth with source 10.200.<4·slot+2>; the root namespace's
 *           `table ip createos_dns` masquerades exactly that (source 10.200.0.0/16 to an upstream's
 *           address and port). It is not guest traffic (it never crosses tap0), so the guest firewall's
 *           rules do not apply to it; the root namespace's `createos_fw` (net/firewall.ts) lets nothing
 *           else of the namespace's own through, and into the host only to an upstream that is local.
 *
 * dnsmasq daemonizes, writes its pid to {@link RESOLVER_RUN_DIR}/csb-<slot>.pid and lives as long as the
 * namespace: a restarted host daemon finds it still running (namespaces outlive the daemon), pooled
 * namespaces get theirs when they are set up (create latency unchanged), teardown kills it. It drops to
 * the unprivileged `dnsmasq` user (Debian's dnsmasq-base creates it; `nobody` otherwise), logs nothing,
 * and answers negatives at once (`--domain-needed`, `--bogus-priv`, no retries beyond dnsmasq's own).
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { isIPv4 } from "node:net";
import { join } from "node:path";
import { HostdError } from "@createos-sandbox/protocol";
import type { EgressPolicy } from "@createos-sandbox/protocol/egress";
import { writeFileAtomic } from "../sys/fs.js";
import { nft, nftCmd, procCmdline, procGone, run, signal, spawnDaemon, which } from "../sys/index.js";
import { resolverNameArgs } from "./egress.js";
import { GATEWAY_IP, type SlotAddrs, TAP, netnsName } from "./plan.js";

/** Pid files of the resolvers, one per namespace name (namespace names are host-wide, so is this). */
export const RESOLVER_RUN_DIR = "/run/createos-sandbox/dns";
/** Namespace ends of every slot's veth: the source of the resolvers' upstream queries. */
const NS_VETH_NET = "10.200.0.0/16";

export interface Upstream {
  ip: string;
  port: number;
}

/** `ip[:port]` → an upstream; IPv4 only (the namespaces have no IPv6 route). */
export function parseUpstream(s: string): Upstream {
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(s.trim());
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  if (!m?.[1] || !isIPv4(m[1]) || port < 1 || port > 65535)
    throw new HostdError("bad_request", `CREATEOS_SANDBOX_DNS_SERVERS: "${s}" is not an IPv4 ip[:port]`);
  return { ip: m[1], port };
}

/** `nameserver` lines of a resolv.conf that a namespace can reach (IPv4, not loopback). */
export function resolvConfServers(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split("\n")) {
    const ip = /^\s*nameserver\s+(\S+)/.exec(line)?.[1];
    if (ip && isIPv4(ip) && !ip.startsWith("127.")) out.push({ ip, port: 53 });
  }
  return out;
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/**
 * Where the resolvers forward: `CREATEOS_SANDBOX_DNS_SERVERS` (comma-separated ip[:port]), else the
 * host's /etc/resolv.conf; a loopback stub (systemd-resolved's 127.0.0.53) is unreachable from a
 * namespace, so then the servers behind it (/run/systemd/resolve/resolv.conf).
 */
export function dnsUpstreams(
  env: NodeJS.ProcessEnv = process.env,
  read: (path: string) => string = readText,
): Upstream[] {
  const list = env.CREATEOS_SANDBOX_DNS_SERVERS?.trim();
  if (list)
    return list
      .split(",")
      .filter((s) => s.trim() !== "")
      .map(parseUpstream);
  const servers = resolvConfServers(read("/etc/resolv.conf"));
  if (servers.length > 0) return servers;
  const behindStub = resolvConfServers(read("/run/systemd/resolve/resolv.conf"));
  if (behindStub.length > 0) return behindStub;
  throw new HostdError(
    "not_ready",
    "no DNS server for sandboxes: /etc/resolv.conf names none reachable from a network namespace; set CREATEOS_SANDBOX_DNS_SERVERS",
  );
}

export function pidFileOf(netns: string): string {
  return join(RESOLVER_RUN_DIR, `${netns}.pid`);
}

/** The namespace's private-network names (net/overlay.ts): a hosts file the resolver re-reads on SIGHUP. */
export function hostsFileOf(netns: string): string {
  return join(RESOLVER_RUN_DIR, `${netns}.hosts`);
}

/** The unprivileged user dnsmasq drops to: its own when the system has one, else nobody. */
function resolverUser(): string[] {
  const hasDnsmasq = /^dnsmasq:/m.test(readText("/etc/passwd"));
  return [hasDnsmasq ? "--user=dnsmasq" : "--user=nobody", "--group=nogroup"];
}

const ALLOW_ALL: EgressPolicy = { all: true };

/**
 * dnsmasq's argv for one namespace (without the program name); `policy` is the sandbox's egress allowlist,
 * whose names alone it answers when there is one (net/egress.ts).
 */
export function dnsmasqArgs(
  netns: string,
  upstreams: Upstream[],
  user = resolverUser(),
  policy: EgressPolicy = ALLOW_ALL,
): string[] {
  return [
    "--conf-file=/dev/null", // nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d
    "--bind-interfaces",
    `--listen-address=${GATEWAY_IP}`,
    "--except-interface=lo",
    "--port=53",
    "--no-resolv",
    "--no-poll",
    ...resolverNameArgs(
      policy,
      upstreams.map((u) => `${u.ip}#${u.port}`),
    ),
    // names the host resolves locally; dnsmasq re-reads the file on SIGHUP
    "--no-hosts",
    "--addn-hosts=/etc/hosts",
    // the private networks' peers; hosts files answer before `--address=/#/` (the allowlist's NXDOMAIN)
    `--addn-hosts=${hostsFileOf(netns)}`,
    "--cache-size=1000",
    // answered here, at once: single-label names and reverse lookups of private ranges never go upstream
    "--domain-needed",
    "--bogus-priv",
    `--pid-file=${pidFileOf(netns)}`,
    "--log-facility=/dev/null",
    ...user,
  ];
}

/**
 * Query packets a guest may send its resolver: dnsmasq runs in the host daemon's cgroup, not the VM's, so a
 * flood would spend the host's CPU (and the upstream's patience) past the VM's limits. Far above what
 * package managers and browsers ask (tens a second, most from dnsmasq's cache); past it queries are
 * dropped, and the guest's resolver retries after its timeout.
 */
export const DNS_RATE = { perSecond: 200, burst: 1000 };

/**
 * The namespace's redirect: a guest's query to any other DNS server is answered by ours; and the cap on
 * the guest's queries ({@link DNS_RATE}).
 */
export function redirectRules(): string {
  return `table inet createos_dns {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${TAP}" ip daddr != ${GATEWAY_IP} meta l4proto { udp, tcp } th dport 53 counter redirect to :53
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${TAP}" meta l4proto { udp, tcp } th dport 53 limit rate over ${DNS_RATE.perSecond}/second burst ${DNS_RATE.burst} packets counter drop
  }
}
`;
}

/** The root namespace's masquerade of the resolvers' upstream queries (and nothing else from 10.200/16). */
export function rootRules(upstreams: Upstream[]): string {
  const rules = upstreams.map(
    (u) =>
      `    ip saddr ${NS_VETH_NET} ip daddr ${u.ip} meta l4proto { udp, tcp } th dport ${u.port} masquerade`,
  );
  return `table ip createos_dns {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
${rules.join("\n")}
  }
}
`;
}

let rootReady: Promise<void> | undefined;

/** Replaces the root table (once per process: the upstream list is fixed at start). */
function ensureRootDns(upstreams: Upstream[]): Promise<void> {
  rootReady ??= (async () => {
    // add-then-delete makes the delete safe when the table is absent; one batch, so never half applied
    await nft(`table ip createos_dns {}\ndelete table ip createos_dns\n${rootRules(upstreams)}`);
  })().catch((e) => {
    rootReady = undefined;
    throw e;
  });
  return rootReady;
}

/** The pid in a resolver's pid file if that process is still our dnsmasq for `netns`. */
export function resolverPid(netns: string): number | undefined {
  const pid = Number(readText(pidFileOf(netns)).trim());
  return pid > 0 && isResolverOf(pid, netns) ? pid : undefined;
}

/** Whether the namespace's resolver runs, with the options `policy` asks for. */
export function resolverServes(netns: string, policy: EgressPolicy = ALLOW_ALL): boolean {
  const pid = resolverPid(netns);
  if (pid === undefined) return false;
  const want = dnsmasqArgs(netns, dnsUpstreams(), resolverUser(), policy);
  return (procCmdline(pid)?.slice(1) ?? []).join("\0") === want.join("\0");
}

/** Is `pid` the dnsmasq we started for `netns` (its argv names that namespace's pid file)? */
export function isResolverOf(pid: number, netns: string): boolean {
  if (procGone(pid)) return false;
  return procCmdline(pid)?.includes(`--pid-file=${pidFileOf(netns)}`) ?? false;
}

/**
 * Starts the slot's resolver and its redirect; a no-op when one already runs with the same options
 * (re-adoption), a restart when `policy` asks for other names (an egress change: the guest's lookups
 * fail for the few milliseconds in between, and are retried by its resolver library).
 */
export async function startResolver(a: SlotAddrs, policy: EgressPolicy = ALLOW_ALL): Promise<void> {
  if (resolverServes(a.netns, policy)) return;
  if (resolverPid(a.netns) !== undefined) await stopResolver(a.slot);
  const dnsmasq = which("dnsmasq");
  if (!dnsmasq)
    throw new HostdError(
      "not_ready",
      "dnsmasq is not installed (Debian package dnsmasq-base): guests need DNS",
    );
  const upstreams = dnsUpstreams();
  await ensureRootDns(upstreams);
  const have = await nftCmd(["list", "table", "inet", "createos_dns"], a.netns).then(
    () => true,
    () => false,
  );
  if (!have) await nft(redirectRules(), a.netns);
  await mkdir(RESOLVER_RUN_DIR, { recursive: true, mode: 0o755 });
  // Read by dnsmasq as its unprivileged user on SIGHUP: world-readable. A new namespace starts without names.
  if (!existsSync(hostsFileOf(a.netns))) await writeFileAtomic(hostsFileOf(a.netns), "", 0o644);
  // dnsmasq's parent exits once the sockets are bound and the pid file is written (or with the error)
  await spawnDaemon(dnsmasq, dnsmasqArgs(a.netns, upstreams, resolverUser(), policy), {
    netns: a.netns,
    timeoutMs: 10_000,
  });
}

/** Stops the slot's resolver (before its namespace goes, or it would keep the namespace alive). */
export async function stopResolver(slot: number): Promise<void> {
  const netns = netnsName(slot);
  const pids = new Set<number>();
  const fromFile = resolverPid(netns);
  if (fromFile !== undefined) pids.add(fromFile);
  // A resolver whose pid file was lost (a wiped /run) is found among the namespace's processes; with the
  // pid file that scan (an `ip` run, tens of ms under load) is skipped: destroy waits on it.
  if (fromFile === undefined && existsSync(`/run/netns/${netns}`)) {
    const { stdout } = await run("ip", ["netns", "pids", netns]).catch(() => ({ stdout: "" }));
    for (const p of stdout.split("\n").map(Number)) if (p > 0 && isResolverOf(p, netns)) pids.add(p);
  }
  for (const p of pids) signal(p, "SIGTERM");
  for (let i = 0; i < 50 && [...pids].some((p) => !procGone(p)); i++) await sleep(10);
  for (const p of pids) if (!procGone(p)) signal(p, "SIGKILL");
  await rm(pidFileOf(netns), { force: true });
}

/**
 * Replaces the namespace's private-network names. dnsmasq re-reads its hosts files (and drops its cache)
 * on SIGHUP, in its main loop, without restarting: the guest's lookups are never left unanswered. A
 * resolver not running yet reads the file when it starts.
 */
export async function reloadHosts(netns: string, text: string): Promise<void> {
  await mkdir(RESOLVER_RUN_DIR, { recursive: true, mode: 0o755 });
  const path = hostsFileOf(netns);
  if (readText(path) === text && existsSync(path)) return;
  await writeFileAtomic(path, text, 0o644);
  const pid = resolverPid(netns);
  if (pid !== undefined) signal(pid, "SIGHUP");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The namespace's processes other than its resolver (a pooled namespace has none). */
export async function nonResolverPids(slot: number): Promise<number[]> {
  const netns = netnsName(slot);
  const { stdout } = await run("ip", ["netns", "pids", netns]);
  return stdout
    .split("\n")
    .map(Number)
    .filter((p) => p > 0 && !isResolverOf(p, netns));
}
