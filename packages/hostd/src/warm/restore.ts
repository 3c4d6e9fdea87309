/**
 * A VM restored from a warm snapshot: its RAM file cloned (a reflink store: storeram.ts) or sparse-copied,
 * and a new overlay on its frozen disk.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type VmSpec } from "@createos-sandbox/protocol";
import { DEFAULT_TB_SIZE_MIB, MIB, TIMEOUTS, bringUp } from "../bringup.js";
import type { Host, VmParts } from "../host.js";
import { readWarmMeta } from "../records.js";
import { cloneRam } from "../snapshot/store.js";
import { qemuImg } from "../sys/index.js";
import { warmRamSource } from "./storeram.js";

/** Restores `spec` from the warm snapshot in `warm`; `register: false` keeps it for the pool. */
export async function restoreWarm(
  host: Host,
  spec: VmSpec,
  warm: string,
  register: boolean,
): Promise<{ vm: VmParts; laps: Record<string, number> }> {
  const w = await readWarmMeta(warm);
  if (!w) throw new HostdError("internal", `warm snapshot ${warm} is unreadable; delete it to rebuild`);
  return bringUp(host, {
    spec,
    start: {
      base: {
        image: spec.image,
        image_hash: w.image_hash,
        vcpu: w.vcpu,
        mem_mib: w.mem_mib,
        kernel: w.kernel,
        cmdline: w.cmdline,
        accel: w.accel,
        tb_size_mib: host.opts.tbSizeMib ?? DEFAULT_TB_SIZE_MIB,
        chain: [join(warm, "disk.qcow2")],
      },
      boot: { restore: join(warm, "state") },
    },
    files: async (p) => {
      await Promise.all([
        warmRamSource(host, warm).then((src) => cloneRam(host.store, src, join(p.dir, "ram"))),
        warmOverlay(warm, join(p.dir, "disk.qcow2")),
      ]);
    },
    agentMs: TIMEOUTS.restoreAgentMs,
    identity: "configure",
    grow: () => spec.disk_mib * MIB > w.disk_bytes,
    register,
  });
}

/**
 * A new empty overlay on the warm disk: a copy of a template made once per warm snapshot (an empty
 * qcow2 is ~200 KB of header naming its backing file), which saves a qemu-img process per create.
 */
async function warmOverlay(warm: string, dest: string): Promise<void> {
  const tpl = join(warm, "overlay.qcow2");
  if (!existsSync(tpl)) {
    const tmp = `${tpl}.${process.pid}.${randomUUID().slice(0, 8)}`;
    await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", join(warm, "disk.qcow2"), tmp]);
    await rename(tmp, tpl);
  }
  await copyFile(tpl, dest);
}
