/**
 * Reaching the engine. The control plane drives host daemons only through the `HostDaemon` interface:
 * the embedded `LocalHostDaemon` (loaded on first use, so the API serves health, auth and the catalog even
 * while the engine cannot load), or a `RemoteHostDaemon` per `serve --hostd <url>`. The engine's module
 * types come from the hostd project reference, so a signature change there fails this build.
 */
import { readFileSync } from "node:fs";
import { type HostDaemon, RemoteHostDaemon } from "@createos-sandbox/protocol";
import type { Logger } from "./log.js";

type HostdModule = typeof import("@createos-sandbox/hostd");
type ImagesModule = typeof import("@createos-sandbox/hostd/images/index");
type DoctorModule = typeof import("@createos-sandbox/hostd/doctor");
type ServeModule = typeof import("@createos-sandbox/hostd/remote/serve");

export const loadHostd = (): Promise<HostdModule> => import("@createos-sandbox/hostd");
export const loadImages = (): Promise<ImagesModule> => import("@createos-sandbox/hostd/images/index");
export const loadDoctor = (): Promise<DoctorModule> => import("@createos-sandbox/hostd/doctor");
export const loadServe = (): Promise<ServeModule> => import("@createos-sandbox/hostd/remote/serve");

export async function openLocalHostd(
  dataDir: string,
  log: Logger,
  hostId?: string,
): Promise<HostDaemon & { hostId: string }> {
  const mod = await loadHostd();
  // The engine keeps its state under <dataDir>/hostd itself.
  return mod.LocalHostDaemon.open({ dataDir, log, ...(hostId ? { hostId } : {}) });
}

/** The token both sides of the host-daemon connection share; refused when missing or short. */
export function hostdToken(env: NodeJS.ProcessEnv = process.env): string {
  const t = env.CREATEOS_SANDBOX_HOSTD_TOKEN ?? "";
  if (t.length < 16)
    throw new Error(
      "CREATEOS_SANDBOX_HOSTD_TOKEN must be set to a secret of at least 16 characters (the same on the control plane and every host daemon)",
    );
  return t;
}

export function openRemoteHostd(url: string, env: NodeJS.ProcessEnv = process.env): RemoteHostDaemon {
  const caFile = env.CREATEOS_SANDBOX_HOSTD_CA;
  return new RemoteHostDaemon(url, {
    token: hostdToken(env),
    ...(caFile ? { ca: readFileSync(caFile) } : {}),
  });
}
