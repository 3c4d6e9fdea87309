import * as fs from "node:fs";
import * as path from "node:path";

const SENSITIVE_HOME_DIRS = new Set([
  ".ssh",
  ".gnupg",
  ".aws",
  ".config",
  ".docker",
  ".kube",
  ".gcloud",
  ".azure",
]);
const SYSTEM_REMOTE_DIRS = new Set([
  "etc",
  "usr",
  "bin",
  "sbin",
  "lib",
  "lib64",
  "boot",
  "proc",
  "sys",
  "dev",
  "run",
]);

function within(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

function realish(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * Why a local directory must not be synced, or undefined when it may. `/` and `$HOME` itself are
 * never synced; `--force` lifts the rest (outside $HOME and /tmp, credential directories).
 */
export function refuseLocalSyncPath(dir: string, home: string, force: boolean): string | undefined {
  const abs = realish(dir);
  const realHome = realish(home);
  if (abs === "/") return "refusing to sync /";
  if (abs === realHome)
    return "refusing to sync your home directory itself; pick a project directory inside it";
  if (force) return undefined;
  const inHome = within(realHome, abs);
  const inTmp = within(realish("/tmp"), abs) || within("/tmp", abs);
  if (!inHome && !inTmp)
    return `refusing to sync ${abs}: only directories under $HOME or /tmp are synced (--force to override)`;
  if (inHome) {
    const first = path.relative(realHome, abs).split(path.sep)[0] ?? "";
    if (SENSITIVE_HOME_DIRS.has(first)) {
      return `refusing to sync ${abs}: ~/${first} holds credentials (--force to override)`;
    }
  }
  return undefined;
}

/** Remote paths go through the files API, which only takes absolute paths. */
export function refuseRelativeRemote(p: string): string | undefined {
  if (!p.startsWith("/")) return `remote path must be absolute (start with /), got "${p}"`;
  return undefined;
}

/** Sync targets inside the guest: absolute, not `/`, not a system directory (no override). */
export function refuseRemoteSyncPath(p: string): string | undefined {
  const rel = refuseRelativeRemote(p);
  if (rel) return rel;
  const norm = path.posix.normalize(p);
  if (norm === "/") return "refusing to sync the sandbox's root directory";
  const first = norm.split("/")[1] ?? "";
  if (SYSTEM_REMOTE_DIRS.has(first)) return `refusing to sync system directory /${first} in the sandbox`;
  return undefined;
}
