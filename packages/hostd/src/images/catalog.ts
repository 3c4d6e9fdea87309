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
  /** Tools from the npm registry, unpacked over the Debian tree (a separately cached layer). */
  npm?: NpmLayer;
  /** Files written into the layer (path relative to `/` → content). */
  files?: Record<string, string>;
}

/**
 * What the host's npm installs globally under `/usr/local` of the image, and how the result is arranged.
 * Install scripts never run on the host: what the packages' postinstall would do is spelled out here.
 */
export interface NpmLayer {
  /** `npm install --before`: transitive dependencies resolve as the registry stood then. */
  before: string;
  /** Package name → exact version; `label` → what the catalog's description calls it. */
  packages: { name: string; version: string; label?: string }[];
  /** [from, to] renames, paths relative to `/` (a platform binary out of its npm package). */
  move?: [string, string][];
  /** [existing, new] hard links (what a postinstall's linkSync would have done). */
  link?: [string, string][];
  /** [target, path] symbolic links. */
  symlink?: [string, string][];
  /** Paths removed last (packages whose contents were moved out). */
  remove?: string[];
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
  npm?: NpmLayer;
  files?: Record<string, string>;
  /** Stable id of the recipe: changes whenever the built image would. */
  hash: string;
  /** Id of the mmdebstrap tree alone (what the Debian packages decide); `hash` when there is no layer. */
  treeHash: string;
  /** Id of the npm + files layer, when the recipe has one. */
  layerHash?: string;
}

/**
 * Bump when the rootfs procedure (mmdebstrap options, files written into the tree, mkfs options)
 * changes, so cached images built the old way are not reused.
 */
export const ROOTFS_PROCEDURE = "mmdebstrap+customize+mkfs.ext4 v1";
/** Bump when the layer procedure (npm options, how moves/links/files are applied) changes. */
export const LAYER_PROCEDURE = "npm-install-g+arrange+files v1";

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

type Resolved = Omit<Recipe, "hash" | "treeHash" | "layerHash">;

function resolve(files: Map<string, RecipeFile>, name: string, seen: string[] = []): Resolved {
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
    // a layer is the image's own: bases lend their Debian packages only
    ...(f.npm ? { npm: f.npm } : {}),
    ...(f.files ? { files: f.files } : {}),
  };
}

/** The catalog's description: the recipe's, then the version of every labelled npm tool. */
function describe(r: Resolved): string {
  const tools = (r.npm?.packages ?? []).filter((p) => p.label).map((p) => `${p.label} ${p.version}`);
  return tools.length ? `${r.description}. Versions: ${tools.join(", ")}` : r.description;
}

/** Id of the mmdebstrap tree: the Debian side of the recipe only. */
export function recipeHash(r: Resolved): string {
  // description and default flag do not change the bytes of the image
  const { name, suite, variant, packages, hostname, headroomMib } = r;
  return sha256(
    JSON.stringify({ name, suite, variant, packages, hostname, headroomMib, excludes: DPKG_EXCLUDES }),
    ROOTFS_PROCEDURE,
  );
}

/** Id of the npm + files layer, or undefined when the recipe adds nothing on top of Debian. */
export function layerHash(r: Resolved): string | undefined {
  if (!r.npm && !r.files) return undefined;
  return sha256(JSON.stringify({ npm: r.npm ?? null, files: r.files ?? null }), LAYER_PROCEDURE);
}

/** Tree and layer ids, and the id of the two together (what warm snapshots and the ext4 name follow). */
export function withHashes(r: Resolved): Recipe {
  const treeHash = recipeHash(r);
  const layer = layerHash(r);
  const out = { ...r, description: describe(r), treeHash, hash: layer ? sha256(treeHash, layer) : treeHash };
  return layer ? { ...out, layerHash: layer } : out;
}

/** All recipes, bases resolved, in catalog order (file name order). */
export function loadRecipes(): Recipe[] {
  const files = loadRecipeFiles();
  const byName = new Map(files.map((f) => [f.name, f]));
  return files.map((f) => withHashes(resolve(byName, f.name)));
}

export function findRecipe(name: string): Recipe | undefined {
  return loadRecipes().find((r) => r.name === name);
}

/** Image name → a file/dir name: `nodeops/sandbox:debian` → `nodeops_sandbox_debian`. */
export function sanitiseName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, "_");
}
