/**
 * An image is a kernel, the agent binary and a rootfs built from a recipe; this module puts the three
 * together (building what is missing) and names the result by what it was built from.
 */
import { existsSync } from "node:fs";
import { basename, dirname } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { SingleFlight } from "../sys/fs.js";
import { agentHash, ensureAgent } from "./agent.js";
import { type Recipe, findRecipe, loadRecipes } from "./catalog.js";
import { ensureKernel, kernelHash, kernelPath } from "./kernel.js";
import { ensureLayer } from "./layer.js";
import { ensureExt4, ensureTarball, ext4Path } from "./rootfs.js";
import { type HostTrust, hostTrust } from "./trust.js";
import { sha256 } from "./util.js";

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

/** Kernel + rootfs recipe + agent (+ the host's extra CAs): what a warm snapshot of the image depends on. */
function imageHash(kHash: string, r: Recipe, aHash: string, trust: HostTrust): string {
  return trust.hash ? sha256(kHash, r.hash, aHash, trust.hash) : sha256(kHash, r.hash, aHash);
}

/** Synchronous check: is `name` built with the current kernel, recipe and agent sources? */
export function builtImage(name: string): ImagePaths | undefined {
  const r = findRecipe(name);
  if (!r) return undefined;
  let aHash: string;
  let kHash: string;
  let trust: HostTrust;
  try {
    aHash = agentHash();
    kHash = kernelHash();
    trust = hostTrust();
  } catch {
    return undefined; // agent sources or kernel fragment missing, or an unreadable CA file
  }
  const kernel = kernelPath(kHash);
  const rootfs = ext4Path(r, aHash, trust);
  if (!existsSync(kernel) || !existsSync(rootfs)) return undefined;
  return { name: r.name, kernel, rootfs, hash: imageHash(kHash, r, aHash, trust) };
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
    // read first: a CA file named but unreadable fails the build before anything slow starts
    const trust = hostTrust();
    const [kernel, tarball, layer, agent] = await Promise.all([
      ensureKernel(progress),
      ensureTarball(r, progress),
      ensureLayer(r, progress),
      ensureAgent(progress),
    ]);
    // the hash the binary was built from, even if the sources changed meanwhile
    const aHash = basename(dirname(agent));
    const tarballs = layer ? [tarball, layer] : [tarball];
    const rootfs = await ensureExt4(r, tarballs, agent, aHash, trust, progress);
    progress({ phase: "image:done", fraction: 1, message: `${name}: ${rootfs}` });
    return { name: r.name, kernel, rootfs, hash: imageHash(kernelHash(), r, aHash, trust) };
  });
}
