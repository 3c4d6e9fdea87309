/**
 * The warm-snapshot cache's size cap (<cache>/warm/<key>/): each complete entry's allocated bytes count
 * (its RAM file is sparse), and while the total is over the cap the least recently used entries that no
 * VM or snapshot backs onto are deleted. The LRU clock is the mtime of the entry's `used` marker, touched
 * on every create from it (its meta.json's mtime until then). An evicted entry is rebuilt by the next
 * create of its shape (one cold boot), so eviction only costs time, never data. References are this
 * daemon's: daemons sharing one cache dir need their own caches, or a cap above what they all use.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { type CacheEntry, evictLru, touchMarker } from "../sys/lru.js";

export const DEFAULT_WARM_CACHE_MIB = 8192;
/** An entry touched this recently may be in use by a create that has not recorded its VM yet. */
export const WARM_MIN_IDLE_MS = 60_000;

/** Marks the entry in `dir` as used now (the LRU clock). */
export function touchWarm(dir: string): Promise<void> {
  return touchMarker(join(dir, "used"));
}

async function usedAt(dir: string): Promise<number> {
  const s = await stat(join(dir, "used")).catch(() => stat(join(dir, "meta.json")));
  return s.mtimeMs;
}

/** Complete entries (those with a meta.json); captures in progress (`*.tmp-*`) are not entries. */
export async function listWarm(root: string): Promise<CacheEntry[]> {
  const out: CacheEntry[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name.includes(".tmp-") || name.includes(".evict-")) continue;
    const dir = join(root, name);
    try {
      let bytes = 0;
      for (const f of await readdir(dir)) bytes += (await stat(join(dir, f))).blocks * 512;
      out.push({ path: dir, bytes, usedAt: await usedAt(dir) });
    } catch {
      // Not a complete entry (no meta.json), or deleted meanwhile.
    }
  }
  return out;
}

/**
 * Deletes least recently used entries of `root` not `referenced` (nor used in the last `minIdleMs`) until
 * the total is within `capMib`; returns the deleted dirs. Each is renamed away first, so a create never
 * sees a half-deleted entry: it sees a complete one or none (and boots cold).
 */
export async function evictWarm(
  root: string,
  capMib: number,
  referenced: (dir: string) => boolean,
  opts: { minIdleMs?: number; now?: number } = {},
): Promise<string[]> {
  const idle = { minIdleMs: opts.minIdleMs ?? WARM_MIN_IDLE_MS, now: opts.now };
  return evictLru(await listWarm(root), capMib, referenced, idle);
}
