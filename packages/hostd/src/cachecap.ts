/**
 * Keeps the host's two caches within their caps, in the background (failures are logged): the warm
 * snapshots (warm/cap.ts, CREATEOS_SANDBOX_WARM_CACHE_MIB) and the image layers (images/cap.ts,
 * CREATEOS_SANDBOX_IMAGE_CACHE_MIB). What this daemon's disks back onto is never evicted.
 */
import { readdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { numSetting } from "./diskreserve.js";
import type { Host } from "./host.js";
import { DEFAULT_IMAGE_CACHE_MIB, evictImages } from "./images/cap.js";
import { usedLayers } from "./snapshot/layers.js";
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
