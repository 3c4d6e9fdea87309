import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { mkdir, open, readFile, readdir, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { NO_TIMEOUT, pidAlive, runRaw } from "../sys/index.js";

/** $CREATEOS_SANDBOX_CACHE or ~/.cache/createos-sandbox: images shared by every data dir. */
export function cacheDir(): string {
  const env = process.env.CREATEOS_SANDBOX_CACHE;
  if (env) return env;
  return join(homedir(), ".cache", "createos-sandbox");
}

/**
 * `packages/hostd/images` (recipes). The same relative path works from `src/images/*.ts` and from
 * `dist/images/*.js`, which sit at the same depth.
 */
export function recipesDir(): string {
  return fileURLToPath(new URL("../../images/", import.meta.url));
}

/** `packages/agent` (Go sources of the guest agent). */
export function agentSourceDir(): string {
  return process.env.CREATEOS_SANDBOX_AGENT_SRC ?? fileURLToPath(new URL("../../../agent/", import.meta.url));
}

/** Short hex ids keep paths readable; 64 bits is plenty to tell recipe versions apart. */
export const HASH_LEN = 16;

export function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash("sha256");
  // length-prefix each part so ("ab","c") and ("a","bc") differ
  for (const p of parts) {
    const b = typeof p === "string" ? Buffer.from(p, "utf8") : p;
    h.update(`${b.length}:`);
    h.update(b);
  }
  return h.digest("hex").slice(0, HASH_LEN);
}

/**
 * Hash of every regular file under `root` (sorted relative paths + contents), skipping directories named
 * in `exclude` at the top level. Synchronous because `builtImage()` must be.
 */
export function hashTree(root: string, exclude: string[] = []): string {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      const rel = relative(root, full);
      if (exclude.includes(rel)) continue;
      if (e.isDirectory()) walk(full);
      else if (e.isFile()) files.push(rel);
    }
  };
  walk(root);
  files.sort();
  const h = createHash("sha256");
  for (const f of files) {
    const content = readFileSync(join(root, f));
    h.update(`${f}\0${content.length}\0`);
    h.update(content);
  }
  return h.digest("hex").slice(0, HASH_LEN);
}

/** A fresh temp dir next to the final artifact, so the final rename stays on one filesystem. */
export async function tempDirIn(parent: string, tag: string): Promise<string> {
  await mkdir(parent, { recursive: true });
  await sweepStaleTemps(parent);
  const dir = join(parent, `.tmp-${tag}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(dir);
  return dir;
}

/** Temp dirs left by builds whose process died (a kernel tree is 1.5 GiB): removed before the next build. */
export async function sweepStaleTemps(parent: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^\.tmp-.*-(\d+)-[0-9a-f]{8}$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || pidAlive(pid)) continue;
    await rmrf(join(parent, name));
  }
}

/** Mount points at or below `dir`, deepest first (mmdebstrap mounts proc, sys, /dev/shm in its chroot). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return info
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((mp): mp is string => mp !== undefined)
    .map((mp) => mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((mp) => mp === dir || mp.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/**
 * Removes `path` recursively, but first unmounts whatever is mounted below it, and refuses to delete
 * if something stays mounted: a recursive delete through a leftover bind mount of the host's /dev/shm
 * would destroy host files.
 */
export async function rmrf(path: string): Promise<void> {
  for (const mp of await mountsUnder(path)) {
    const r = await runRaw("umount", [mp], { timeoutMs: NO_TIMEOUT });
    if (r.code !== 0) await runRaw("umount", ["-l", mp], { timeoutMs: NO_TIMEOUT });
  }
  const left = await mountsUnder(path);
  if (left.length > 0) throw new Error(`not deleting ${path}: still mounted below it: ${left.join(", ")}`);
  await rm(path, { recursive: true, force: true });
}

/**
 * Cross-process build lock: only one process builds `lockPath`'s artifact at a time (a second kernel build
 * on a 2-core host would double the time of both). Waiters poll until the holder exits, then run `fn`,
 * which must re-check whether the artifact exists by then. A holder that died leaves a lock naming a dead
 * pid, which is taken over.
 */
export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  onWait?: (holderPid: number) => void,
): Promise<T> {
  await mkdir(dirname(lockPath), { recursive: true });
  let waited = false;
  for (;;) {
    try {
      const fh = await open(lockPath, "wx");
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const holder = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
      if (!holder || !pidAlive(holder)) {
        // stale (or still being written: the pid goes in right after creation, give it a moment)
        if (!holder) await sleep(200);
        const again = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
        if (!again || !pidAlive(again)) await rm(lockPath, { force: true });
        continue;
      }
      if (!waited) onWait?.(holder);
      waited = true;
      await sleep(2000);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function fmtMiB(bytes: number): string {
  return `${(bytes / 1048576).toFixed(0)} MiB`;
}
