/**
 * Size caps for the host's caches (warm snapshots, image layers): least recently used entries that
 * nothing references go first, until the rest fit. Each cache says what an entry is and how recently it
 * was used; this module picks and deletes. The LRU clock is a marker file's mtime, touched on each use.
 */
import { randomUUID } from "node:crypto";
import { rename, rm, utimes, writeFile } from "node:fs/promises";

export interface CacheEntry {
  /** A file or a directory; deleted whole. */
  path: string;
  /** Allocated bytes (sparse files count what they hold). */
  bytes: number;
  /** Epoch ms of its last use. */
  usedAt: number;
}

/**
 * The entries to delete, least recently used first, so that the others total at most `capBytes`:
 * never one `keep` names, nor one used after `idleBefore` (a create may be about to use it).
 */
function pickEvictions(
  entries: CacheEntry[],
  capBytes: number,
  keep: (path: string) => boolean,
  idleBefore: number,
): CacheEntry[] {
  let total = entries.reduce((n, e) => n + e.bytes, 0);
  const out: CacheEntry[] = [];
  for (const e of [...entries].sort((a, b) => a.usedAt - b.usedAt)) {
    if (total <= capBytes) break;
    if (keep(e.path) || e.usedAt > idleBefore) continue;
    out.push(e);
    total -= e.bytes;
  }
  return out;
}

/**
 * Deletes what `pickEvictions` picks (each renamed away first, with the files `companions` names for it,
 * e.g. its LRU marker) and returns the deleted paths, least recently used first. `minIdleMs` before
 * `now` is the window in which a use may not have been recorded yet.
 */
export async function evictLru(
  entries: CacheEntry[],
  capMib: number,
  keep: (path: string) => boolean,
  idle: { minIdleMs: number; now?: number },
  companions: (path: string) => string[] = () => [],
): Promise<string[]> {
  const idleBefore = (idle.now ?? Date.now()) - idle.minIdleMs;
  const evicted: string[] = [];
  for (const e of pickEvictions(entries, capMib * 2 ** 20, keep, idleBefore)) {
    await removeAway(e.path);
    for (const c of companions(e.path)) await removeAway(c).catch(() => undefined);
    evicted.push(e.path);
  }
  return evicted;
}

/** Sets `marker`'s mtime to now, creating it empty if needed. */
export async function touchMarker(marker: string): Promise<void> {
  const t = new Date();
  await utimes(marker, t, t).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") await writeFile(marker, "");
    else throw e;
  });
}

/** Renames `path` away before deleting it, so a reader sees the whole entry or none (never half). */
export async function removeAway(path: string): Promise<void> {
  const away = `${path}.evict-${randomUUID().slice(0, 8)}`;
  await rename(path, away);
  await rm(away, { recursive: true, force: true });
}
