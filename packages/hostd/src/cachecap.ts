/**
 * Keeps the host's two caches within their caps, in the background (failures are logged): the warm
 * snapshots (warm/cap.ts, CREATEOS_SANDBOX_WARM_CACHE_MIB) and the image layers (images/cap.ts,
 * CREATEOS_SANDBOX_IMAGE_CACHE_MIB). What this daemon's disks back onto is never evicted.
 */
import { readdir, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { numSetting } from "./diskreserve.js";
import type { Host } from "./host.js";
import { DEFAULT_IMAGE_CACHE_MIB, evictImages } from "./images/cap.js";
import type { Layout } from "./records.js";
import { usedLayers } from "./snapshot/layers.js";
import { pidAlive } from "./sys/proc.js";
import { backingChain } from "./vmm/jail.js";
import { DEFAULT_WARM_CACHE_MIB, evictWarm } from "./warm/cap.js";

export function capCaches(host: Host): void {
  host.background(async () => {
    const cap = numSetting(host.opts.warmCacheMib, "CREATEOS_SANDBOX_WARM_CACHE_MIB", DEFAULT_WARM_CACHE_MIB);
    const used = await usedLayers(host);
    const pooled = host.warmPool.warmDirs();
    const keep = (d: string) => used.has(join(d, "disk.qcow2")) || pooled.has(d);
    const evicted = await evictWarm(host.layout.warm, cap, keep);
    if (evicted.length > 0)
      host.log.info("warm cache over its cap: evicted", {
        evicted: evicted.map((d) => basename(d)),
        cap_mib: cap,
      });
  });
  host.background(async () => {
    const env = "CREATEOS_SANDBOX_IMAGE_CACHE_MIB";
    const cap = numSetting(host.opts.imageCacheMib, env, DEFAULT_IMAGE_CACHE_MIB);
    const refs = await backedOnto(host);
    const evicted = await evictImages(join(host.layout.cache, "rootfs"), cap, (p) => refs.has(p));
    if (evicted.length > 0) host.log.info("image cache over its cap: evicted", { evicted, cap_mib: cap });
  });
}

/**
 * Every file a disk of this daemon backs onto, read from the qcow2 headers (a rootfs is the raw bottom of
 * each chain): the VMs' and snapshots' top layers, the warm entries' disks and the frozen layers.
 */
async function backedOnto(host: Host): Promise<Set<string>> {
  const { layout } = host;
  const tops: string[] = [];
  for (const root of [layout.vms, layout.snaps, layout.warm])
    for (const name of await readdir(root).catch(() => [] as string[]))
      tops.push(join(root, name, "disk.qcow2"));
  for (const name of await readdir(layout.layers).catch(() => [] as string[]))
    tops.push(join(layout.layers, name));
  const refs = new Set<string>();
  for (const top of tops) for (const f of await backingChain(top).catch(() => [])) refs.add(f);
  return refs;
}

/** An entry sys/lru.ts `removeAway` renamed away: deleted next, so never anything still needed. */
const EVICTED_RE = /\.evict-[0-9a-f]{8}$/;
/** A warm capture in progress (warm/capture.ts): `<key>.tmp-<pid of its daemon>-<8 hex>`. */
const CAPTURE_RE = /\.tmp-(\d+)-[0-9a-f]{8}$/;
/** A commit in progress (images/template.ts): `<name>.tmp-<8 hex>` beside the committed images. */
const COMMIT_RE = /\.tmp-[0-9a-f]{8}$/;

/**
 * At start: what a crash (a SIGKILL) left half made or half deleted, which nothing else ever deletes —
 * evictions cut short in both caches, warm captures whose daemon is gone (the cache may be shared by
 * daemons on one host: a live one's, or this process's, is kept), and this daemon's unfinished commits.
 */
export async function sweepLeftovers(layout: Layout): Promise<void> {
  const names = (dir: string) => readdir(dir).catch(() => [] as string[]);
  const gone = (dir: string, name: string) => rm(join(dir, name), { recursive: true, force: true });
  for (const name of await names(layout.warm)) {
    const capture = CAPTURE_RE.exec(name);
    const dead = capture && Number(capture[1]) !== process.pid && !pidAlive(Number(capture[1]));
    if (EVICTED_RE.test(name) || dead) await gone(layout.warm, name);
  }
  const rootfs = join(layout.cache, "rootfs");
  for (const image of await names(rootfs))
    for (const name of await names(join(rootfs, image)))
      if (EVICTED_RE.test(name)) await gone(join(rootfs, image), name);
  const committed = join(layout.root, "images");
  for (const name of await names(committed)) if (COMMIT_RE.test(name)) await gone(committed, name);
}
