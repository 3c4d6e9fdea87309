import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

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
  const dir = join(parent, `.tmp-${tag}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(dir);
  return dir;
}

export async function rmrf(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}

/** Concurrent callers asking for the same key share one in-flight promise; failures are not cached. */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  do(key: string, fn: () => Promise<T>): Promise<T> {
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }
}

export function fmtMiB(bytes: number): string {
  return `${(bytes / 1048576).toFixed(0)} MiB`;
}
