/**
 * The free-space reserve: create, pause and fork write files (RAM copies, disk layers, snapshots) and are
 * refused, as a `capacity` error the control plane answers as 503 with Retry-After, while the host's disk
 * has less than the reserve free, instead of filling the disk and failing halfway (or failing the host's
 * other writers: the database, the logs).
 */
import { statfs } from "node:fs/promises";
import { HostdError } from "@createos-sandbox/protocol";

export const DEFAULT_MIN_FREE_DISK_MIB = 2048;

/** A host daemon setting: the open option, else the environment variable `name`, else `fallback`. */
export function numSetting(
  opt: number | undefined,
  name: string,
  fallback: number,
  env: NodeJS.ProcessEnv = process.env,
): number {
  if (opt !== undefined) return opt;
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${raw}`);
  return n;
}

/** The reserve: the open option, else `$CREATEOS_SANDBOX_MIN_FREE_DISK_MIB`, else the default. */
export function minFreeDiskMib(opt: number | undefined, env: NodeJS.ProcessEnv = process.env): number {
  return numSetting(opt, "CREATEOS_SANDBOX_MIN_FREE_DISK_MIB", DEFAULT_MIN_FREE_DISK_MIB, env);
}

/** MiB an unprivileged writer may still use on the filesystem of `dir`; undefined when it does not exist. */
export async function freeDiskMib(dir: string): Promise<number | undefined> {
  try {
    const s = await statfs(dir);
    return Math.floor((s.bavail * s.bsize) / 2 ** 20);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Throws `capacity` when any of `dirs` (the data dir, the image cache) has less than `reserveMib` free. */
export async function checkDiskReserve(dirs: string[], reserveMib: number, action: string): Promise<void> {
  for (const dir of dirs) {
    const free = await freeDiskMib(dir);
    if (free !== undefined && free < reserveMib)
      throw new HostdError(
        "capacity",
        `not enough free disk on this host to ${action}: ${free} MiB free, ${reserveMib} MiB kept in reserve; destroy sandboxes or free space on the host`,
      );
  }
}
