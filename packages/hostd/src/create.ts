/**
 * Create: restore the image's warm snapshot (through the warm pool when it has a VM ready), or, for the
 * first VM of a shape, boot it cold and capture the warm snapshot from it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { VmRuntime, VmSpec } from "@createos-sandbox/protocol";
import { now } from "./bringup.js";
import { type Host, runtimeOf } from "./host.js";
import { validateSpec } from "./records.js";
import { touchWarm } from "./warm/cap.js";
import { coldCreate, warmKey } from "./warm/capture.js";
import { restoreWarm } from "./warm/restore.js";

/**
 * `opts.cold` boots the image instead of restoring its warm snapshot (benchmarks compare the two; the
 * control plane never sets it).
 */
export async function create(host: Host, spec: VmSpec, opts: { cold?: boolean }): Promise<VmRuntime> {
  validateSpec(spec);
  host.checkCapacity(spec.mem_mib);
  await host.checkDiskReserve("create a sandbox");
  return host.withReservedId(spec.sandbox_id, async () => {
    const t0 = now();
    const img = await host.resolveImage(spec.image);
    const accel = await host.accel();
    const key = warmKey(img, spec);
    const warm = host.layout.warmDir(key);
    if (opts.cold) return await coldCreate(host, spec, img, accel, t0);
    if (!existsSync(join(warm, "meta.json"))) {
      // First VM of this shape: boot it cold and capture the warm snapshot from it (one boot, shared by
      // concurrent first creates: only one of them boots cold, the others wait and restore).
      let booted: VmRuntime | undefined;
      await host.warmFlight.do(key, async () => {
        booted = await coldCreate(host, spec, img, accel, t0);
        return warm;
      });
      if (booted) return booted;
    }
    host.warmPool.note(key, warm, spec);
    // The cache cap's LRU clock; a failure to touch it must not fail the create.
    await touchWarm(warm).catch((e) => host.log.warn("warm cache marker", { error: String(e) }));
    const pooled = host.warmPool.take(key);
    if (pooled) {
      try {
        return await host.warmPool.adopt(pooled, spec, t0);
      } catch (e) {
        // The failed adopt has stopped the pooled VM and freed what it held.
        host.log.warn("pooled VM unusable, restoring instead", { error: String(e) });
      }
    }
    const { vm, laps } = await restoreWarm(host, spec, warm, true);
    const rt = runtimeOf(spec, vm.rec, t0, "warm");
    host.log.info("VM created (warm)", { sandbox_id: spec.sandbox_id, spawn_ms: rt.spawn_ms, ...laps });
    return rt;
  });
}
