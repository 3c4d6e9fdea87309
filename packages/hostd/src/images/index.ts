/**
 * Guest images: kernel, agent binary and rootfs catalog, built locally from Debian packages and cached
 * under {@link cacheDir}. Every artifact is keyed by a hash of what produced it, written to a temp path
 * and renamed into place, so a crash never leaves something that looks complete.
 */
import { existsSync } from "node:fs";
import { basename, dirname } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { agentHash, ensureAgent } from "./agent.js";
import { type Recipe, findRecipe, loadRecipes } from "./catalog.js";
import { ensureKernel, kernelHash, kernelPath } from "./kernel.js";
import {
  AGENT_GUEST_PATH,
  GUEST_ADDRESS,
  GUEST_GATEWAY,
  ensureExt4,
  ensureTarball,
  ext4Path,
} from "./rootfs.js";
import { SingleFlight, sha256 } from "./util.js";

export { buildImagesCli } from "./cli.js";
export { cacheDir } from "./util.js";
export { ensureAgent } from "./agent.js";
export { ensureKernel } from "./kernel.js";

export interface ImagePaths {
  name: string;
  kernel: string;
  rootfs: string;
  /** stable id for warm-snapshot cache keys */
  hash: string;
}

/** The rootfs catalog, in display order. */
export function catalog(): { name: string; description: string; default?: boolean }[] {
  return loadRecipes().map((r) => ({
    name: r.name,
    description: r.description,
    ...(r.default ? { default: true } : {}),
  }));
}

/** Name of the default image (`devbox:1`). */
export function defaultImage(): string {
  const recipes = loadRecipes();
  return (recipes.find((r) => r.default) ?? recipes[0])?.name ?? "devbox:1";
}

function recipeOrThrow(name: string): Recipe {
  const r = findRecipe(name);
  if (!r) {
    const names = loadRecipes()
      .map((x) => x.name)
      .join(", ");
    throw new HostdError("bad_request", `unknown image "${name}"; available: ${names}`);
  }
  return r;
}

/** Kernel + rootfs recipe + agent: what a warm snapshot of the image depends on. */
function imageHash(kHash: string, r: Recipe, aHash: string): string {
  return sha256(kHash, r.hash, aHash);
}

/** Synchronous check: is `name` built with the current kernel, recipe and agent sources? */
export function builtImage(name: string): ImagePaths | undefined {
  const r = findRecipe(name);
  if (!r) return undefined;
  let aHash: string;
  let kHash: string;
  try {
    aHash = agentHash();
    kHash = kernelHash();
  } catch {
    return undefined; // agent sources or kernel fragment missing
  }
  const kernel = kernelPath(kHash);
  const rootfs = ext4Path(r, aHash);
  if (!existsSync(kernel) || !existsSync(rootfs)) return undefined;
  return { name: r.name, kernel, rootfs, hash: imageHash(kHash, r, aHash) };
}

const flight = new SingleFlight<ImagePaths>();

/**
 * Kernel, agent and rootfs of `name`, building whatever is missing (the kernel compile and the
 * mmdebstrap download run side by side). Throws HostdError("bad_request") for unknown names.
 */
export async function ensureImage(name: string, onProgress?: (p: Progress) => void): Promise<ImagePaths> {
  const r = recipeOrThrow(name);
  const done = builtImage(name);
  if (done) return done;
  const progress = onProgress ?? (() => {});
  return flight.do(name, async () => {
    const [kernel, tarball, agent] = await Promise.all([
      ensureKernel(progress),
      ensureTarball(r, progress),
      ensureAgent(progress),
    ]);
    // the hash the binary was built from, even if the sources changed meanwhile
    const aHash = basename(dirname(agent));
    const rootfs = await ensureExt4(r, tarball, agent, aHash, progress);
    progress({ phase: "image:done", fraction: 1, message: `${name}: ${rootfs}` });
    return { name: r.name, kernel, rootfs, hash: imageHash(kernelHash(), r, aHash) };
  });
}

export interface CmdlineOptions {
  /** Host TSC frequency, kHz (`cpu MHz` in /proc/cpuinfo × 1000). */
  hostKhz: number;
  /**
   * Replace the agent as PID 1 (tests, debugging). There is deliberately no way to pass init arguments:
   * they would follow `--`, and QEMU's microvm appends its `virtio_mmio.device=` entries at the very end
   * of the command line, where the kernel would then hand them to init instead of probing the devices.
   */
  init?: string;
  /** Drop `quiet` to see the kernel's boot messages on the console. */
  verbose?: boolean;
  /**
   * Static guest address via the kernel's `ip=`. Default true. Without a NIC, `ip=…:eth0` makes the
   * kernel wait 12 s for eth0 to appear, so VMs booted without a network device must pass false.
   */
  network?: boolean;
}

/**
 * The base kernel command line every guest boots with. QEMU must run the microvm machine with
 * `acpi=off` (`-M microvm,acpi=off,…`): only then does it append the `virtio_mmio.device=` entries the
 * kernel needs to find its disk, NIC and console ports (this kernel has no ACPI).
 */
export function kernelCmdline(opts: CmdlineOptions): string {
  const khz = Math.round(opts.hostKhz);
  if (!Number.isFinite(khz) || khz <= 0) throw new HostdError("bad_request", `bad host kHz ${opts.hostKhz}`);
  const parts = [
    "console=ttyS0",
    // microvm + custom kernel: with ACPI on, QEMU leaves the virtio_mmio.device= entries out
    "acpi=off",
    "reboot=t",
    "panic=-1",
    // microvm has no HPET/PM timer: without these the guest sometimes hangs calibrating the TSC
    `tsc_early_khz=${khz}`,
    "tsc=reliable",
    `lpj=${khz * 4}`,
    "no_timer_check",
    "root=/dev/vda",
    "rootfstype=ext4",
    "rw",
    `init=${opts.init ?? AGENT_GUEST_PATH}`,
    // the VM is the isolation boundary; guest-internal Spectre/Meltdown mitigations (KPTI above all)
    // cost a lot under TCG and protect nothing the sandbox promises
    "mitigations=off",
    "random.trust_cpu=on",
    "8250.nr_uarts=1",
  ];
  if (!opts.verbose) parts.push("quiet");
  if (opts.network !== false) parts.push(`ip=${GUEST_ADDRESS}::${GUEST_GATEWAY}:255.255.255.252::eth0:off`);
  return parts.join(" ");
}

export { hostKhz } from "./hostinfo.js";
