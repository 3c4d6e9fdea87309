/**
 * A recipe's layer: what goes on top of its Debian tree, cached as its own tarball so that a change to the
 * Debian packages re-uses the npm tools and a new tool version re-uses the mmdebstrap tree. The npm side is
 * the host's npm (`npm install -g --prefix <stage>/usr/local`): it fetches from the registry the host is
 * configured for and checks every tarball against the registry's integrity hash. Install scripts never
 * run: they would run registry code as root on the host, so what they do (put a platform binary in place)
 * is spelled out in the recipe as moves and links.
 */
import { existsSync } from "node:fs";
import { link, mkdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, normalize } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { SingleFlight } from "../sys/fs.js";
import { NO_TIMEOUT, run, which } from "../sys/index.js";
import type { NpmLayer, Recipe } from "./catalog.js";
import { imageDir } from "./rootfs.js";
import { rmrf, tempDirIn, withFileLock } from "./util.js";

export function layerPath(r: Recipe): string | undefined {
  return r.layerHash ? join(imageDir(r.name), `${r.layerHash}.tar`) : undefined;
}

/** `rel` under `root`; recipe paths are relative and never climb out of the tree. */
function inside(root: string, rel: string): string {
  const n = normalize(rel);
  if (isAbsolute(rel) || n === ".." || n.startsWith("../") || n === ".")
    throw new Error(`layer path ${JSON.stringify(rel)} must be relative and inside the tree`);
  return join(root, n);
}

const flight = new SingleFlight<string>();

/** The layer tarball of `r` (built when missing), or undefined when the recipe has no layer. */
export async function ensureLayer(r: Recipe, onProgress: (p: Progress) => void): Promise<string | undefined> {
  const out = layerPath(r);
  if (!out) return undefined;
  if (existsSync(out)) return out;
  return flight.do(out, () =>
    withFileLock(
      `${out}.lock`,
      async () => (existsSync(out) ? out : buildLayer(r, out, onProgress)),
      (pid) =>
        onProgress({
          phase: "layer:wait",
          message: `another process (pid ${pid}) is building ${r.name}'s layer`,
        }),
    ),
  );
}

async function buildLayer(r: Recipe, out: string, progress: (p: Progress) => void): Promise<string> {
  const tmp = await tempDirIn(imageDir(r.name), `layer-${r.layerHash}`);
  try {
    const root = join(tmp, "root");
    await mkdir(root);
    if (r.npm) await npmInstall(root, r.npm, join(tmp, "npm.log"), r.name, progress);
    for (const [rel, text] of Object.entries(r.files ?? {})) {
      const p = inside(root, rel);
      await mkdir(dirname(p), { recursive: true });
      await writeFile(p, text, { mode: 0o644 });
    }
    progress({ phase: "layer:pack", message: `${r.name}: packing the layer` });
    const tar = join(tmp, "layer.tar");
    // owner root whatever ran npm; hard links (a binary and its postinstall copy) stay one file
    await run("tar", ["-cf", tar, "--numeric-owner", "--owner=0", "--group=0", "-C", root, "."], {
      timeoutMs: NO_TIMEOUT,
    });
    await rename(tar, out);
    await rename(join(tmp, "npm.log"), out.replace(/\.tar$/, ".log")).catch(() => {});
    return out;
  } finally {
    await rmrf(tmp);
  }
}

async function npmInstall(
  root: string,
  spec: NpmLayer,
  logPath: string,
  name: string,
  progress: (p: Progress) => void,
): Promise<void> {
  const npm = which("npm");
  if (!npm)
    throw new HostdError("not_ready", "npm is not installed on this host (images with npm tools need it)");
  const prefix = join(root, "usr/local");
  await mkdir(prefix, { recursive: true });
  const pkgs = spec.packages.map((p) => `${p.name}@${p.version}`);
  const args = [
    "install",
    "--global",
    `--prefix=${prefix}`,
    "--ignore-scripts",
    `--before=${spec.before}`,
    "--no-audit",
    "--no-fund",
    "--no-update-notifier",
    // the guest's node, not the host's, is the one these packages run on
    "--engine-strict=false",
    ...pkgs,
  ];
  progress({ phase: "layer:npm", message: `${name}: npm install ${pkgs.join(" ")}` });
  const log: string[] = [];
  try {
    await run(npm, args, {
      env: { ...process.env, npm_config_loglevel: "warn" },
      timeoutMs: NO_TIMEOUT,
      onLine: (line) => log.push(line),
    });
  } finally {
    await writeFile(logPath, `npm ${args.join(" ")}\n${log.join("\n")}\n`).catch(() => {});
  }
  for (const [from, to] of spec.move ?? []) {
    await rm(inside(root, to), { recursive: true, force: true });
    await mkdir(dirname(inside(root, to)), { recursive: true });
    await rename(inside(root, from), inside(root, to));
  }
  for (const [existing, path] of spec.link ?? []) {
    await rm(inside(root, path), { force: true });
    await link(inside(root, existing), inside(root, path));
  }
  for (const [target, path] of spec.symlink ?? []) {
    await rm(inside(root, path), { force: true });
    await mkdir(dirname(inside(root, path)), { recursive: true });
    await symlink(target, inside(root, path));
  }
  for (const rel of spec.remove ?? []) await rm(inside(root, rel), { recursive: true, force: true });
}
