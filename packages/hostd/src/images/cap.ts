/**
 * The image-layer cache's size cap (<cache>/rootfs/<image>/): each built rootfs
 * (`<tree>[-<layer>]-<agent>[-ca…].ext4`), each debootstrapped tree (`<tree>.tar`, what a rootfs is rebuilt
 * from when the agent or the host's CAs change) and each npm layer (`<layer>.tar`) is an entry. While the
 * total is over the cap, the least recently used entries that no disk backs onto are deleted. The LRU
 * clock is the mtime of `<entry>.used`, touched whenever a VM is started from the image (the file's own
 * mtime until then); a tree counts as used when any rootfs built from it was. An evicted entry is rebuilt by the next create of its image, so eviction costs time, never data.
 * References are this daemon's (its VMs, snapshots, warm entries and frozen layers): daemons sharing one
 * cache dir need a cap above what they all use.
 */
import { readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { type CacheEntry, evictLru, touchMarker } from "../sys/lru.js";

export const DEFAULT_IMAGE_CACHE_MIB = 16384;
/** An entry used this recently may back a create that has not recorded its disk yet. */
export const IMAGE_MIN_IDLE_MS = 60_000;

const USED = ".used";

/** Marks the rootfs (or tree) at `path` as used now. */
export function touchImage(path: string): Promise<void> {
  return touchMarker(`${path}${USED}`);
}

async function mtimeOr(path: string, fallback: number): Promise<number> {
  return (await stat(path).catch(() => undefined))?.mtimeMs ?? fallback;
}

/** Built rootfs files and trees; build logs, markers and builds in progress (temp names) are not entries. */
export async function listImages(root: string): Promise<CacheEntry[]> {
  const out: CacheEntry[] = [];
  for (const image of await readdir(root).catch(() => [] as string[])) {
    const dir = join(root, image);
    const names = await readdir(dir).catch(() => [] as string[]);
    const entries: CacheEntry[] = [];
    for (const name of names) {
      if (!/^[0-9a-f]+(-[0-9a-z]+)*\.(ext4|tar)$/.test(name)) continue;
      const path = join(dir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) continue;
      entries.push({ path, bytes: st.blocks * 512, usedAt: await mtimeOr(`${path}${USED}`, st.mtimeMs) });
    }
    // A tree (or a layer) is as recently used as the newest rootfs built from it: the rootfs name's
    // leading segments are the ids of the tarballs it was unpacked from (`<tree>[-<layer>]-<agent>…`).
    for (const t of entries.filter((e) => e.path.endsWith(".tar"))) {
      const id = basename(t.path, ".tar");
      for (const e of entries) {
        if (!e.path.endsWith(".ext4")) continue;
        const segments = basename(e.path, ".ext4").split("-");
        if (segments.slice(0, -1).includes(id)) t.usedAt = Math.max(t.usedAt, e.usedAt);
      }
    }
    out.push(...entries);
  }
  return out;
}

/**
 * Deletes least recently used entries of `root` that `referenced` does not name (nor used in the last
 * `minIdleMs`) until the total is within `capMib`; returns the deleted paths. A rootfs's marker goes
 * with it.
 */
export async function evictImages(
  root: string,
  capMib: number,
  referenced: (path: string) => boolean,
  opts: { minIdleMs?: number; now?: number } = {},
): Promise<string[]> {
  const idle = { minIdleMs: opts.minIdleMs ?? IMAGE_MIN_IDLE_MS, now: opts.now };
  return evictLru(await listImages(root), capMib, referenced, idle, (p) => [`${p}${USED}`]);
}
