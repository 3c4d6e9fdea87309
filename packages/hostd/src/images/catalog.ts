import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { recipesDir, sha256 } from "./util.js";

/** A rootfs recipe as stored in `packages/hostd/images/rootfs/*.json`. */
export interface RecipeFile {
  name: string;
  description: string;
  default?: boolean;
  /** Inherit suite, variant and packages from this image. */
  base?: string;
  suite?: string;
  variant?: string;
  packages: string[];
  hostname?: string;
  /** Free space in the image on top of the tree, MiB. */
  headroom_mib?: number;
}

/** A recipe with its base folded in: everything the build needs, nothing else. */
export interface Recipe {
  name: string;
  description: string;
  default: boolean;
  suite: string;
  variant: string;
  packages: string[];
  hostname: string;
  headroomMib: number;
  /** Stable id of the recipe: changes whenever the built image would. */
  hash: string;
}

/**
 * Bump when the rootfs procedure (mmdebstrap options, files written into the tree, mkfs options)
 * changes, so cached images built the old way are not reused.
 */
export const ROOTFS_PROCEDURE = "mmdebstrap+customize+mkfs.ext4 v1";

/** Files and directories dpkg never unpacks into our images: docs, manuals, translations. */
export const DPKG_EXCLUDES = [
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
  "path-exclude=/usr/share/info/*",
  "path-exclude=/usr/share/locale/*",
  "path-include=/usr/share/locale/locale.alias",
  "path-exclude=/usr/share/lintian/*",
  "path-exclude=/usr/share/linda/*",
];

function loadRecipeFiles(): RecipeFile[] {
  const dir = join(recipesDir(), "rootfs");
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort();
  return files.map((f) => {
    const r = JSON.parse(readFileSync(join(dir, f), "utf8")) as RecipeFile;
    if (typeof r.name !== "string" || !Array.isArray(r.packages) || typeof r.description !== "string") {
      throw new Error(`bad rootfs recipe ${f}: needs name, description, packages`);
    }
    return r;
  });
}

function resolve(files: Map<string, RecipeFile>, name: string, seen: string[] = []): Omit<Recipe, "hash"> {
  const f = files.get(name);
  if (!f) throw new Error(`rootfs recipe ${seen.at(-1) ?? name} has unknown base ${name}`);
  if (seen.includes(name))
    throw new Error(`rootfs recipes have a base cycle: ${[...seen, name].join(" → ")}`);
  const base = f.base ? resolve(files, f.base, [...seen, name]) : undefined;
  const packages = [...new Set([...(base?.packages ?? []), ...f.packages])].sort();
  return {
    name: f.name,
    description: f.description,
    default: f.default === true,
    suite: f.suite ?? base?.suite ?? "bookworm",
    variant: f.variant ?? base?.variant ?? "minbase",
    packages,
    hostname: f.hostname ?? base?.hostname ?? "sandbox",
    headroomMib: f.headroom_mib ?? base?.headroomMib ?? 512,
  };
}

export function recipeHash(r: Omit<Recipe, "hash">): string {
  // description and default flag do not change the bytes of the image
  const { name, suite, variant, packages, hostname, headroomMib } = r;
  return sha256(
    JSON.stringify({ name, suite, variant, packages, hostname, headroomMib, excludes: DPKG_EXCLUDES }),
    ROOTFS_PROCEDURE,
  );
}

/** All recipes, bases resolved, in catalog order (file name order). */
export function loadRecipes(): Recipe[] {
  const files = loadRecipeFiles();
  const byName = new Map(files.map((f) => [f.name, f]));
  return files.map((f) => {
    const r = resolve(byName, f.name);
    return { ...r, hash: recipeHash(r) };
  });
}

export function findRecipe(name: string): Recipe | undefined {
  return loadRecipes().find((r) => r.name === name);
}

/** Image name → a file/dir name: `nodeops/sandbox:debian` → `nodeops_sandbox_debian`. */
export function sanitiseName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, "_");
}
