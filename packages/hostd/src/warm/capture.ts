/**
 * Cold boot, and the warm snapshot captured from it: the first VM of an (image, shape, disk) is booted from
 * scratch and snapshotted while it runs on as its sandbox, so no second boot is needed and every later
 * create of that shape restores the snapshot instead (warm/restore.ts).
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Accel, VmRuntime, VmSpec } from "@createos-sandbox/protocol";
import { DEFAULT_TB_SIZE_MIB, MIB, TIMEOUTS, bringUp, growDisk } from "../bringup.js";
import { capCaches } from "../cachecap.js";
import { type Host, type VmParts, runtimeOf } from "../host.js";
import { type WarmMeta, fsyncFile, writeWarmMeta } from "../records.js";
import { cpSparse, qemuImg } from "../sys/index.js";
import { viaFd } from "../sys/nofollow.js";

export interface BuiltImage {
  name: string;
  kernel: string;
  rootfs: string;
  hash: string;
}

/** The warm snapshot's key: the disk size is part of it, since its root fs is already grown to it. */
export function warmKey(img: BuiltImage, spec: VmSpec): string {
  return `${img.hash}-${spec.vcpu}c-${spec.mem_mib}m-${spec.disk_mib}d`;
}

/** Boots `spec` from the image and, unless one exists, captures the warm snapshot `key` from it. */
export async function coldCreate(
  host: Host,
  spec: VmSpec,
  img: BuiltImage,
  accel: Accel,
  t0: number,
): Promise<VmRuntime> {
  const cmdline = host.baseCmdline();
  const imgBytes = (await stat(img.rootfs)).size;
  const { vm } = await bringUp(host, {
    spec,
    start: {
      base: {
        image: spec.image,
        image_hash: img.hash,
        vcpu: spec.vcpu,
        mem_mib: spec.mem_mib,
        kernel: img.kernel,
        cmdline,
        accel,
        tb_size_mib: host.opts.tbSizeMib ?? DEFAULT_TB_SIZE_MIB,
        chain: [],
      },
      boot: "cold",
    },
    files: async (p) => {
      const disk = join(p.dir, "disk.qcow2");
      await qemuImg(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", img.rootfs, disk, String(imgBytes)]);
    },
    agentMs: TIMEOUTS.coldAgentMs,
    afterAgent: async (vm) => {
      // Grown before the warm capture: VMs restored from it then start with a root fs of disk_mib
      // (growing ext4 online costs 150–300 ms of cold guest code under TCG on every create otherwise).
      if (spec.disk_mib * MIB > imgBytes) await growDisk(vm, spec.disk_mib);
      const diskBytes = Math.max(imgBytes, spec.disk_mib * MIB);
      await captureWarm(host, vm, warmKey(img, spec), { img, spec, cmdline, accel, diskBytes });
    },
    // The sandbox's identity comes after the capture: the warm snapshot must not carry it.
    identity: "configure",
    grow: () => false,
    register: true,
  });
  const rt = runtimeOf(spec, vm.rec, t0, "cold");
  host.log.info("VM created (cold boot)", { sandbox_id: spec.sandbox_id, spawn_ms: rt.spawn_ms });
  return rt;
}

/**
 * Snapshot this freshly booted VM as the image's warm snapshot, then let it run on. The VM keeps writing
 * its own disk.qcow2; the warm snapshot gets a copy taken while the VM is stopped, which is frozen from
 * then on (every warm-created VM gets its own overlay on it).
 */
async function captureWarm(
  host: Host,
  { machine, agent, dir }: VmParts,
  key: string,
  o: { img: BuiltImage; spec: VmSpec; cmdline: string; accel: Accel; diskBytes: number },
): Promise<void> {
  const warm = host.layout.warmDir(key);
  if (existsSync(join(warm, "meta.json"))) return;
  const tmp = `${warm}.tmp-${process.pid}-${randomUUID().slice(0, 8)}`;
  await mkdir(tmp, { recursive: true });
  try {
    await agent.quiesce();
    await machine.pause();
    await machine.snapshot(join(tmp, "state"));
    await Promise.all([
      // The running VM's dir is its QEMU's to plant links in: each file is read through a descriptor.
      viaFd(join(dir, "ram"), (from) => cpSparse(from, join(tmp, "ram"))),
      viaFd(join(dir, "disk.qcow2"), (from) => cpSparse(from, join(tmp, "disk.qcow2"))),
    ]);
    const meta: WarmMeta = {
      key,
      image: o.img.name,
      image_hash: o.img.hash,
      vcpu: o.spec.vcpu,
      mem_mib: o.spec.mem_mib,
      disk_bytes: o.diskBytes,
      kernel: o.img.kernel,
      cmdline: o.cmdline,
      accel: o.accel,
      created_at: new Date().toISOString(),
    };
    // meta.json is flushed by its atomic write; the data files it vouches for are flushed here.
    await writeWarmMeta(tmp, meta);
    for (const f of ["ram", "state", "disk.qcow2"]) await fsyncFile(join(tmp, f));
    // Another daemon on this host may have captured the same snapshot meanwhile: theirs is as good.
    await rename(tmp, warm).catch(async (e) => {
      if (!existsSync(join(warm, "meta.json"))) throw e;
      await rm(tmp, { recursive: true, force: true });
    });
    capCaches(host);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  } finally {
    if (machine.state === "paused") await machine.resume();
  }
  // quiesce stops the agent sending until the next hello.
  await agent.hello();
}
