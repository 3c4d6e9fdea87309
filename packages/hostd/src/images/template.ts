/**
 * Images made from a VM's root disk (templates built by the control plane): the builder VM's disk chain
 * (its overlay over the warm snapshot's over the base rootfs) is flattened into one ext4 raw file, checked
 * and shrunk to its contents, under `<data>/hostd/images/<name>/`. From then on the name resolves like a
 * built-in image: create boots it cold once, captures its warm snapshot, and later creates restore that.
 */
import { randomUUID } from "node:crypto";
import { constants, existsSync, readFileSync } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { HostdError } from "@createos-sandbox/protocol";
import type { Host } from "../host.js";
import { writeJsonAtomic } from "../sys/fs.js";
import { NO_TIMEOUT, qemuImg, run } from "../sys/index.js";
import { openRegular } from "../sys/nofollow.js";
import { runRaw } from "../sys/run.js";
import { chainSpec, diskChain, jailIds } from "../vmm/jail.js";
import { sha256 } from "./util.js";

/** Names the control plane gives committed images (template ids); never a built-in's `name:tag`. */
export const COMMITTED_IMAGE_RE = /^tpl_[A-Za-z0-9]{1,64}$/;

interface CommittedMeta {
  name: string;
  /** The image the builder booted (its kernel boots this one too). */
  base: string;
  kernel: string;
  size_bytes: number;
  /** Random per commit: the warm snapshot key of a re-committed name never matches the old one. */
  nonce: string;
  created_at: string;
}

export function committedDir(dataRoot: string, name: string): string {
  return join(dataRoot, "images", name);
}

/** The committed image `name` as the lifecycle sees an image, or undefined. */
export function committedImage(
  dataRoot: string,
  name: string,
): { name: string; kernel: string; rootfs: string; hash: string } | undefined {
  if (!COMMITTED_IMAGE_RE.test(name)) return undefined;
  const dir = committedDir(dataRoot, name);
  let meta: CommittedMeta;
  try {
    meta = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) as CommittedMeta;
  } catch {
    return undefined;
  }
  const rootfs = join(dir, "rootfs.ext4");
  if (!existsSync(rootfs) || !existsSync(meta.kernel)) return undefined;
  return { name, kernel: meta.kernel, rootfs, hash: sha256("committed", name, meta.nonce, meta.kernel) };
}

/**
 * Running VM → its root disk becomes image `name`; the VM is destroyed, or with `keep` (a build's layer
 * cache) resumed. The guest flushes first (`sync` reaches QEMU as a virtio flush, which writes qcow2's
 * cached metadata too) and the VM's vCPUs are stopped while its disk is read, so the copy is the state the
 * last exec left. When `name` exists, answers it.
 */
export async function commitImage(
  host: Host,
  sandboxId: string,
  name: string,
  opts: { keep?: boolean },
  destroy: (id: string) => Promise<void>,
): Promise<{ image: string; size_bytes: number }> {
  if (!COMMITTED_IMAGE_RE.test(name)) throw new HostdError("bad_request", `invalid image name ${name}`);
  const done = committedImage(host.layout.root, name);
  if (done) {
    if (!opts.keep) await destroy(sandboxId);
    return { image: name, size_bytes: (await stat(done.rootfs)).size };
  }
  const vm = host.getVm(sandboxId);
  await host.checkDiskReserve("commit an image");
  const flushed = await vm.agent.exec({ argv: ["sync"] }, {});
  if (flushed.exit_code !== 0)
    throw new HostdError("internal", `sync in the builder failed (${flushed.exit_code})`);
  const dir = committedDir(host.layout.root, name);
  const tmp = `${dir}.tmp-${randomUUID().slice(0, 8)}`;
  await mkdir(tmp, { recursive: true });
  try {
    const out = join(tmp, "rootfs.ext4");
    await host.withVmLock(vm, async () => {
      await vm.machine.pause();
      try {
        await convertTop(host, join(vm.dir, "disk.qcow2"), out);
      } finally {
        if (opts.keep) await vm.machine.resume();
      }
    });
    if (!opts.keep) await destroy(sandboxId);
    await checkAndShrink(out);
    const size = (await stat(out)).size;
    const meta: CommittedMeta = {
      name,
      base: vm.rec.image,
      kernel: vm.rec.kernel,
      size_bytes: size,
      nonce: randomUUID(),
      created_at: new Date().toISOString(),
    };
    await writeJsonAtomic(join(tmp, "meta.json"), meta);
    await mkdir(join(host.layout.root, "images"), { recursive: true });
    await rename(tmp, dir);
    return { image: name, size_bytes: size };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Removes a committed image. VMs running from it keep their open file; built-in names are refused. */
/**
 * `e2fsck -f -y` then `resize2fs -M` of a committed disk. The filesystem is the guest's work, byte for byte,
 * and e2fsprogs has had memory-safety bugs on crafted filesystems: so the two run as a uid no VM has (the
 * jail's base + 0), without groups or capabilities, on a descriptor of the image (/dev/fd/3, handed over
 * owned by that uid: no path they would need to reach), and give the file back to root after.
 */
export async function checkAndShrink(image: string): Promise<void> {
  const { uid, gid } = jailIds(0);
  const fh = await open(image, constants.O_RDWR | constants.O_NOFOLLOW);
  try {
    await fh.chown(uid, gid);
    const as = { uid, gid, fds: [fh.fd], timeoutMs: NO_TIMEOUT };
    // exit 1 means "errors corrected" (the journal the stopped guest left): fine; ≥ 4 is not
    const fsck = await runRaw("e2fsck", ["-f", "-y", "/dev/fd/3"], as);
    if (fsck.code >= 4)
      throw new HostdError("internal", `e2fsck of the committed disk failed: ${fsck.stdout}${fsck.stderr}`);
    await run("resize2fs", ["-M", "/dev/fd/3"], as);
    await fh.chown(0, 0);
  } finally {
    await fh.close();
  }
}

export async function deleteImage(host: Host, name: string): Promise<void> {
  if (!COMMITTED_IMAGE_RE.test(name)) throw new HostdError("bad_request", `${name} is not a committed image`);
  await rm(committedDir(host.layout.root, name), { recursive: true, force: true });
}

/**
 * Flattens the builder's disk into `out` with qemu-img, run as root on a disk a jailed QEMU wrote: the
 * chain is checked against the daemon's own layer and image dirs (vmm/jail.ts `diskChain`) and handed to
 * qemu-img layer by layer (`chainSpec`), so no backing name from a header (which the still-running QEMU
 * can rewrite) is followed, and the top is read through a descriptor opened without following a link.
 */
export async function convertTop(host: Host, top: string, out: string): Promise<void> {
  const chain = await diskChain(top, host.diskRoots());
  const fh = await openRegular(top, constants.O_RDONLY);
  try {
    const spec = chainSpec(chain, `/proc/${process.pid}/fd/${fh.fd}`);
    await qemuImg(["convert", "-U", "-q", spec, "-O", "raw", out]);
  } finally {
    await fh.close();
  }
}
