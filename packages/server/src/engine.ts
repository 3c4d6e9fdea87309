/**
 * Loading the engine package. Imported by name at run time so the control plane builds and serves
 * (health, auth, catalog …) even while the engine is absent or broken; the shapes below are the parts of
 * `@createos-sandbox/hostd` the program uses.
 */
import type { HostDaemon } from "@createos-sandbox/protocol";
import type { Logger } from "./log.js";

interface HostdModule {
  LocalHostDaemon: { open(opts: { dataDir: string; cacheDir?: string; log?: Logger }): Promise<HostDaemon> };
}
interface ImagesModule {
  buildImagesCli(names: string[]): Promise<number>;
  catalog(): { name: string; description: string; default?: boolean }[];
}
interface DoctorModule {
  doctor(): Promise<{ check: string; ok: boolean; detail: string; required?: boolean }[]>;
}

const load = <T>(spec: string): Promise<T> => import(spec) as Promise<T>;

export async function openLocalHostd(dataDir: string, log: Logger): Promise<HostDaemon> {
  const mod = await load<HostdModule>("@createos-sandbox/hostd");
  // The engine keeps its state under <dataDir>/hostd itself.
  return mod.LocalHostDaemon.open({ dataDir, log });
}

export const loadImages = () => load<ImagesModule>("@createos-sandbox/hostd/images/index");
export const loadDoctor = () => load<DoctorModule>("@createos-sandbox/hostd/doctor");
