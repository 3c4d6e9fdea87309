import { homedir } from "node:os";
import { join } from "node:path";
import { parsePool } from "./overlay/alloc.js";

/** Everything an operator can tune; read once at start from flags and environment. */
export interface ServerConfig {
  dataDir: string;
  host: string;
  port: number;
  region: string;
  /** Token bucket per tenant, kept in memory per replica. */
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  /** Token bucket per client IP that each failed authentication drains; empty → 429 before any lookup. */
  authFailPerSecond: number;
  authFailBurst: number;
  /** A request's headers must arrive within this (slowloris); the connection is then answered 408 and closed. */
  headersTimeoutMs: number;
  /** The whole request, body included (uploads), must arrive within this; 0 = no deadline. */
  requestTimeoutMs: number;
  /** A JSON body must arrive within this once its headers did. */
  jsonBodyTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** Concurrent connections one client address may hold; 0 = no cap. */
  maxConnectionsPerIp: number;
  /** `host:port` of a second listener serving only `/metrics`, without auth (for a scraper on a private network). */
  metricsListen: string | undefined;
  /** Open exec/file/shell/tunnel streams of one tenant across its sandboxes (429 past it). */
  maxStreamsPerTenant: number;
  /** Buffered exec output one tenant's calls may hold at once, in MiB (429 past it). */
  maxExecBufferMibPerTenant: number;
  /** How long a verified credential is trusted without a database read; 0 disables the cache. */
  authCacheMs: number;
  maxRunningPerTenant: number;
  maxNetworksPerTenant: number;
  /** The pool private networks' subnets are cut from, one /24 each (overlay/alloc.ts). */
  overlayCidr: string;
  /** Sandboxes in any status but destroyed/failed (paused ones hold disk and a snapshot). */
  maxSandboxesPerTenant: number;
  /** Sum of `disk_mib` of those sandboxes. */
  maxDiskMibPerTenant: number;
  /** Sum of the recorded snapshot sizes of those sandboxes. */
  maxSnapshotBytesPerTenant: number;
  /** Largest `disk_mib` one sandbox may ask for (create, resize). */
  maxDiskMib: number;
  schedulerIntervalMs: number;
  /** Lower bound of `auto_pause_after_seconds`; 60 by protocol, lowered only by tests. */
  autoPauseMinSeconds: number;
  maxFileBytes: number;
  maxJsonBodyBytes: number;
  maxHeaderBytes: number;
  /** Seconds between heartbeats on a quiet exec stream. */
  execHeartbeatMs: number;
  /** `host:port` of the ingress proxy (`ingress/`); undefined = off. */
  ingressListen: string | undefined;
  /** Domain of ingress hostnames `<ulid>-<port>.<domain>`; `localhost` needs no DNS. */
  ingressDomain: string;
  /** PEM certificate (a wildcard for the domain) and key: the proxy then serves TLS. */
  ingressTlsCert: string | undefined;
  ingressTlsKey: string | undefined;
  /** Port in the URLs handed out, when clients reach the proxy through another port (a load balancer). */
  ingressPublicPort: number | undefined;
  /** How long a request waits for a woken (or starting) sandbox's port to answer, then 504. */
  ingressWakeTimeoutMs: number;
  /** How long the guest has to send a response's headers, then 504. */
  ingressResponseTimeoutMs: number;
  /**
   * Filled in at start once the ingress listener is bound: the `scheme://` and `:port` suffix the
   * templates use (views.ts). Undefined while ingress is off, so no template is handed out.
   */
  ingressOrigin?: { scheme: "http" | "https"; port: string };
  /** `host:port` of the SSH gateway (`ssh/`); undefined = off. */
  sshListen: string | undefined;
  /** A gateway connection that has not logged in within this is closed. */
  sshLoginGraceMs: number;
  /** "local" = open the in-process host daemon; "none" = serve the API without an engine. */
  hostd: "local" | "none";
  defaultImage: string | undefined;
  /** The disk credentials' AES-256-GCM key: the operator's file, or `<dataDir>/disk-key` made on first start. */
  diskKeyFile: string | undefined;
}

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.CREATEOS_SANDBOX_DATA_DIR || join(homedir(), ".local", "share", "createos-sandbox");
}

function num(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${raw}`);
  return n;
}

/** A listener setting: its default when unset, undefined (off) for `off`. */
function listen(env: NodeJS.ProcessEnv, name: string, fallback: string): string | undefined {
  const raw = env[name];
  if (raw === "off") return undefined;
  return raw || fallback;
}

export function loadConfig(
  flags: { dataDir?: string; host?: string; port?: number },
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const hostd = env.CREATEOS_SANDBOX_HOSTD ?? "local";
  if (!env.CREATEOS_SANDBOX_INGRESS_TLS_CERT !== !env.CREATEOS_SANDBOX_INGRESS_TLS_KEY)
    throw new Error("CREATEOS_SANDBOX_INGRESS_TLS_CERT and _KEY must be set together");
  if (hostd !== "local" && hostd !== "none") throw new Error("CREATEOS_SANDBOX_HOSTD must be local or none");
  return {
    dataDir: flags.dataDir ?? defaultDataDir(env),
    host: flags.host ?? "127.0.0.1",
    port: flags.port ?? 8080,
    region: env.CREATEOS_SANDBOX_REGION || "local",
    rateLimitPerSecond: num(env, "CREATEOS_SANDBOX_RATE_LIMIT_RPS", 50),
    rateLimitBurst: num(env, "CREATEOS_SANDBOX_RATE_LIMIT_BURST", 200),
    authFailPerSecond: num(env, "CREATEOS_SANDBOX_AUTH_FAIL_RPS", 1),
    authFailBurst: num(env, "CREATEOS_SANDBOX_AUTH_FAIL_BURST", 20),
    headersTimeoutMs: num(env, "CREATEOS_SANDBOX_HEADERS_TIMEOUT_MS", 10_000),
    requestTimeoutMs: num(env, "CREATEOS_SANDBOX_REQUEST_TIMEOUT_MS", 600_000),
    jsonBodyTimeoutMs: num(env, "CREATEOS_SANDBOX_JSON_BODY_TIMEOUT_MS", 30_000),
    keepAliveTimeoutMs: num(env, "CREATEOS_SANDBOX_KEEPALIVE_TIMEOUT_MS", 65_000),
    maxConnectionsPerIp: num(env, "CREATEOS_SANDBOX_MAX_CONNECTIONS_PER_IP", 512),
    metricsListen: env.CREATEOS_SANDBOX_METRICS_LISTEN || undefined,
    maxStreamsPerTenant: num(env, "CREATEOS_SANDBOX_MAX_STREAMS_PER_TENANT", 1024),
    maxExecBufferMibPerTenant: num(env, "CREATEOS_SANDBOX_MAX_EXEC_BUFFER_MIB_PER_TENANT", 256),
    authCacheMs: num(env, "CREATEOS_SANDBOX_AUTH_CACHE_MS", 1000),
    maxRunningPerTenant: num(env, "CREATEOS_SANDBOX_MAX_RUNNING_PER_TENANT", 20),
    maxNetworksPerTenant: num(env, "CREATEOS_SANDBOX_MAX_NETWORKS_PER_TENANT", 10),
    overlayCidr: parsePool(env.CREATEOS_SANDBOX_OVERLAY_CIDR || "10.240.0.0/12").cidr,
    maxSandboxesPerTenant: num(env, "CREATEOS_SANDBOX_MAX_SANDBOXES_PER_TENANT", 100),
    maxDiskMibPerTenant: num(env, "CREATEOS_SANDBOX_MAX_DISK_MIB_PER_TENANT", 1024 * 1024),
    maxSnapshotBytesPerTenant: num(env, "CREATEOS_SANDBOX_MAX_SNAPSHOT_BYTES_PER_TENANT", 256 * 1024 ** 3),
    maxDiskMib: num(env, "CREATEOS_SANDBOX_MAX_DISK_MIB", 65536),
    schedulerIntervalMs: num(env, "CREATEOS_SANDBOX_SCHEDULER_INTERVAL_MS", 5000),
    autoPauseMinSeconds: num(env, "CREATEOS_SANDBOX_AUTO_PAUSE_MIN_SECONDS", 60),
    maxFileBytes: num(env, "CREATEOS_SANDBOX_MAX_FILE_BYTES", 500 * 1024 * 1024),
    maxJsonBodyBytes: 1024 * 1024,
    maxHeaderBytes: 16 * 1024,
    execHeartbeatMs: num(env, "CREATEOS_SANDBOX_EXEC_HEARTBEAT_MS", 5000),
    ingressListen: listen(env, "CREATEOS_SANDBOX_INGRESS_LISTEN", "127.0.0.1:8081"),
    ingressDomain: (env.CREATEOS_SANDBOX_INGRESS_DOMAIN || "localhost").toLowerCase().replace(/^\.+/, ""),
    ingressTlsCert: env.CREATEOS_SANDBOX_INGRESS_TLS_CERT || undefined,
    ingressTlsKey: env.CREATEOS_SANDBOX_INGRESS_TLS_KEY || undefined,
    ingressPublicPort: env.CREATEOS_SANDBOX_INGRESS_PUBLIC_PORT
      ? num(env, "CREATEOS_SANDBOX_INGRESS_PUBLIC_PORT", 0)
      : undefined,
    ingressWakeTimeoutMs: num(env, "CREATEOS_SANDBOX_INGRESS_WAKE_TIMEOUT_MS", 60_000),
    ingressResponseTimeoutMs: num(env, "CREATEOS_SANDBOX_INGRESS_RESPONSE_TIMEOUT_MS", 60_000),
    sshListen: listen(env, "CREATEOS_SANDBOX_SSH_LISTEN", "127.0.0.1:2222"),
    sshLoginGraceMs: num(env, "CREATEOS_SANDBOX_SSH_LOGIN_GRACE_MS", 30_000),
    hostd,
    defaultImage: env.CREATEOS_SANDBOX_DEFAULT_IMAGE || undefined,
    diskKeyFile: env.CREATEOS_SANDBOX_DISK_KEY_FILE || undefined,
  };
}
