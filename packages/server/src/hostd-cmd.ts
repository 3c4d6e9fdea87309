/**
 * `createos-sandbox hostd`: one host daemon as its own process, serving the host-daemon protocol
 * (packages/protocol/HOSTD-PROTOCOL.md) to control planes started with `serve --hostd <url>`. Its VMs run
 * daemonized, so they outlive this process; a restart with the same data dir and id re-adopts them.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { hostdToken, loadServe, openLocalHostd } from "./engine.js";
import { createLogger } from "./log.js";

export const HOSTD_HELP = `createos-sandbox hostd --listen <host:port | unix:PATH> [--data-dir DIR] [--id NAME]
                       [--tls-cert FILE --tls-key FILE]

Runs a host daemon (QEMU microVMs on this machine) for control planes started with
\`createos-sandbox serve --hostd <url>\`. Every request needs "Authorization: Bearer <token>" with the
token from CREATEOS_SANDBOX_HOSTD_TOKEN (at least 16 characters; the control plane uses the same one).
--listen 127.0.0.1:0 picks a free port; the "hostd listening" log line gives the URL.
--id names the host in the control plane (default: an id made on first start and kept in the data dir).
With --tls-cert and --tls-key it serves HTTPS; control planes trust it via CREATEOS_SANDBOX_HOSTD_CA.
VMs keep running when this process stops and are re-adopted by the next start on the same data dir.`;

/** The id this data dir's host goes by: made once, kept in `<data-dir>/hostd/host-id`. */
async function persistedHostId(dataDir: string): Promise<string> {
  const file = join(dataDir, "hostd", "host-id");
  try {
    const id = readFileSync(file, "utf8").trim();
    if (id) return id;
  } catch {
    // First start on this data dir.
  }
  const id = `${hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")}-${randomBytes(3).toString("hex")}`;
  mkdirSync(join(dataDir, "hostd"), { recursive: true, mode: 0o700 });
  const { writeFileAtomic } = await import("@createos-sandbox/hostd/sys/fs");
  await writeFileAtomic(file, `${id}\n`);
  return id;
}

export interface HostdFlags {
  listen: string;
  dataDir: string;
  id?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export async function runHostd(f: HostdFlags): Promise<never> {
  const token = hostdToken();
  if (!!f.tlsCert !== !!f.tlsKey) throw new Error("--tls-cert and --tls-key go together");
  if (f.id !== undefined && !/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(f.id))
    throw new Error("--id must be 1-63 of [a-z0-9_.-], starting with a letter or digit");
  const log = createLogger();
  const id = f.id ?? (await persistedHostId(f.dataDir));
  const daemon = await openLocalHostd(f.dataDir, log, id);
  const { createHostdServer, listenHostd } = await loadServe();
  const tls =
    f.tlsCert && f.tlsKey ? { cert: readFileSync(f.tlsCert), key: readFileSync(f.tlsKey) } : undefined;
  const server = createHostdServer(daemon, { token, log, ...(tls ? { tls } : {}) });
  const url = await listenHostd(server, f.listen);
  log.now("hostd listening", { url, host_id: id, data_dir: f.dataDir });
  const stop = async (signal: string) => {
    log.now("hostd shutting down", { signal });
    server.closeAllConnections();
    server.close();
    // Running VMs keep running; the next start re-adopts them.
    await daemon.close().catch(() => undefined);
    log.flush();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  return new Promise<never>(() => undefined);
}
