/**
 * The snapshot store: the filesystem under `<dataDir>/hostd` (VM dirs, snapshots, frozen layers). Where it
 * has reflinks (shared extents: XFS with reflink=1, btrfs), a fork's RAM file is a clone of its parent's —
 * a file of its own, writable by its VM alone, with no data copied; a child's write allocates new blocks
 * for that child only. Where the data dir's filesystem has none (ext4), the host daemon makes one: a
 * sparse XFS image `<dataDir>/hostd.xfs`, loop-mounted on `<dataDir>/hostd` before re-adoption. Mounted on
 * `hostd` itself, so every path a record, a qcow2 chain or a jail names is the same as on a plain store,
 * and links and renames (freeze, pause, resume) stay within one filesystem.
 *
 *   auto       (default) the data dir's own reflinks if it has them; else the image: made on a fresh data
 *              dir, or mounted again if it exists; a data dir already holding state on a filesystem
 *              without reflinks stays as it is (logged). Any failure (no mkfs.xfs, no loop devices, not
 *              root) falls back to plain, logged.
 *   xfs-image  the image, or the open fails.
 *   plain      no image is made; forks copy their parent's RAM (sparse) unless the filesystem has
 *              reflinks. An image made before is still mounted: the snapshots in it live there.
 */
import { constants, existsSync } from "node:fs";
import { copyFile, mkdir, open, readFile, readdir, rename, rm, statfs, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "../daemon.js";
import type { Layout } from "../records.js";
import { fsyncDir, writeFileAtomic } from "../sys/fs.js";
import { cpSparse, fstrim, mkfsXfsReflink, mountXfsImage, umount } from "../sys/index.js";
import { viaFd } from "../sys/nofollow.js";

export type SnapshotFsMode = "auto" | "xfs-image" | "plain";

export interface SnapshotStore {
  /** `native`: the data dir's own filesystem has reflinks; `xfs-image`: the loop-mounted image. */
  kind: "native" | "xfs-image" | "plain";
  reflink: boolean;
  /** The image file, when the store is one. */
  image?: string;
}

/** An open option, else the environment's `name`, else the first of `values`; anything else fails the open. */
function choice<T extends string>(
  name: string,
  values: readonly T[],
  opt: T | undefined,
  env: NodeJS.ProcessEnv,
): T {
  const v = opt ?? (env[name] || values[0]!);
  if (!values.includes(v as T))
    throw new Error(`${name} must be ${values.slice(0, -1).join(", ")} or ${values.at(-1)}, got ${v}`);
  return v as T;
}

/** The store mode: the open option, else `$CREATEOS_SANDBOX_SNAPSHOT_FS`, else `auto`. */
export function snapshotFsMode(
  opt: SnapshotFsMode | undefined,
  env: NodeJS.ProcessEnv = process.env,
): SnapshotFsMode {
  return choice("CREATEOS_SANDBOX_SNAPSHOT_FS", ["auto", "xfs-image", "plain"], opt, env);
}

/**
 * The fork RAM mode: the open option, else `$CREATEOS_SANDBOX_FORK_RAM`, else `copy` — a RAM file of the
 * fork's own, cloned ({@link cloneRam}); `map` maps the parent's frozen RAM layer (daemon.ts says why opt-in).
 */
export function forkRamMode(
  opt: "copy" | "map" | undefined,
  env: NodeJS.ProcessEnv = process.env,
): "copy" | "map" {
  return choice("CREATEOS_SANDBOX_FORK_RAM", ["copy", "map"], opt, env);
}

/** The image file of a layout's store. */
export function imagePath(layout: Layout): string {
  return `${layout.root}.xfs`;
}

/**
 * The filesystem mounted exactly on `dir`, from a mountinfo text (`/proc/self/mountinfo`): its type and
 * source, or undefined when `dir` is no mount point. Paths there escape space, tab, newline and `\` in octal.
 */
export function mountAt(mountinfo: string, dir: string): { fstype: string; source: string } | undefined {
  const unoctal = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  let found: { fstype: string; source: string } | undefined;
  for (const line of mountinfo.split("\n")) {
    const [pre, post] = line.split(" - ");
    const f = pre?.split(" ");
    if (!f || !post || unoctal(f[4] ?? "") !== dir) continue;
    const [fstype = "", source = ""] = post.split(" ");
    // A later line is a mount stacked on top: the one visible there.
    found = { fstype, source: unoctal(source) };
  }
  return found;
}

/** The file behind a loop device (`/dev/loopN`), or undefined. */
async function loopBacking(dev: string): Promise<string | undefined> {
  const m = /^\/dev\/(loop\d+)$/.exec(dev);
  if (!m) return undefined;
  const f = await readFile(`/sys/block/${m[1]}/loop/backing_file`, "utf8").catch(() => "");
  return f.trim() || undefined;
}

/** Whether files in `dir` can be cloned (FICLONE): tried on a small probe file, then removed. */
export async function canReflink(dir: string): Promise<boolean> {
  const a = join(dir, `.reflink-probe-${process.pid}`);
  const b = `${a}.clone`;
  try {
    const f = await open(a, "w", 0o600);
    await f.write(Buffer.alloc(4096, 1));
    await f.close();
    await copyFile(a, b, constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all([unlink(a).catch(() => undefined), unlink(b).catch(() => undefined)]);
  }
}

/**
 * What may lie in `hostd/` before the daemon's first start and is no state of its: `createos-sandbox
 * hostd` writes its `host-id` there first. Carried into the image when it is mounted (the copy under
 * the mount point stays, the same), so the id is the same whether the image is mounted or not.
 */
const CARRIED = ["host-id"];

/** Mounts the layout's image on `hostd` unless it is mounted there already. */
async function ensureMounted(layout: Layout, image: string): Promise<void> {
  const m = mountAt(await readFile("/proc/self/mountinfo", "utf8"), layout.root);
  if (m) {
    if (m.fstype === "xfs" && (await loopBacking(m.source)) === image) return;
    throw new Error(`${layout.root} is a mount point of ${m.source} (${m.fstype}), not of ${image}`);
  }
  await mkdir(layout.root, { recursive: true, mode: 0o700 });
  const carried = new Map<string, Buffer>();
  for (const f of CARRIED) {
    const b = await readFile(join(layout.root, f)).catch(() => undefined);
    if (b) carried.set(f, b);
  }
  await mountXfsImage(image, layout.root);
  for (const [f, b] of carried)
    if (!existsSync(join(layout.root, f))) await writeFileAtomic(join(layout.root, f), b);
}

/**
 * Makes the image: a sparse file as large as the filesystem it lives on (it takes only what it holds; the
 * free-space reserve is checked on both), formatted under a temporary name, then renamed into place, so
 * a crash leaves either no image or a whole one.
 */
async function makeImage(image: string): Promise<void> {
  const tmp = `${image}.tmp`;
  await rm(tmp, { force: true });
  const s = await statfs(dirname(image));
  const f = await open(tmp, "w", 0o600);
  try {
    await f.truncate(s.blocks * s.bsize);
  } finally {
    await f.close();
  }
  try {
    await mkfsXfsReflink(tmp);
    const g = await open(tmp, "r");
    await g.sync().finally(() => g.close());
    await rename(tmp, image);
    await fsyncDir(dirname(image));
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Sets up the store before anything under `hostd` is read (re-adoption included); see the file comment. */
export async function openStore(layout: Layout, mode: SnapshotFsMode, log: Logger): Promise<SnapshotStore> {
  const image = imagePath(layout);
  const exists = await open(image, "r").then(
    (f) => f.close().then(() => true),
    () => false,
  );
  if (exists) {
    await ensureMounted(layout, image);
    if (mode === "plain")
      log.warn("snapshot store: plain asked, but an XFS image exists: mounted", { image });
    return { kind: "xfs-image", reflink: await canReflink(layout.root), image };
  }
  await mkdir(layout.root, { recursive: true, mode: 0o700 });
  if (await canReflink(layout.root)) return { kind: "native", reflink: true };
  if (mode === "plain") return { kind: "plain", reflink: false };
  const held = (await readdir(layout.root)).some((f) => !CARRIED.includes(f));
  try {
    if (held) throw new Error(`${layout.root} already holds state on a filesystem without reflinks`);
    await makeImage(image);
    await ensureMounted(layout, image);
  } catch (e) {
    if (mode === "xfs-image") throw e;
    log.warn("snapshot store: no reflinks, forks copy their parent's RAM", { error: String(e) });
    return { kind: "plain", reflink: false };
  }
  const reflink = await canReflink(layout.root);
  log.info("snapshot store: XFS image made and mounted", { image, reflink });
  return { kind: "xfs-image", reflink, image };
}

/**
 * At close: trims and unmounts the image once no VM dir is left on it (a VM left running for the next
 * daemon keeps it mounted, and so does anything else still using it: the unmount then fails, logged).
 */
export async function closeStore(layout: Layout, store: SnapshotStore, log: Logger): Promise<void> {
  if (store.kind !== "xfs-image") return;
  if ((await readdir(layout.vms).catch(() => [])).length > 0) return;
  // What the store freed since it was mounted goes back to the filesystem the image lives on.
  await fstrim(layout.root).catch((e) => log.warn("snapshot store: fstrim failed", { error: String(e) }));
  await umount(layout.root).catch((e) => log.warn("snapshot store: unmount failed", { error: String(e) }));
}

/**
 * A RAM file of its own for a fork or a resumed layer: a clone where the store has reflinks (no data
 * copied: the blocks are shared until either side writes), else a sparse copy.
 */
export async function cloneRam(store: SnapshotStore, src: string, dst: string): Promise<void> {
  // `src` came from a VM dir (a pause moves names as they are): a planted link is refused, not copied.
  await viaFd(src, async (from) => {
    if (store.reflink) await copyFile(from, dst, constants.COPYFILE_FICLONE_FORCE);
    else await cpSparse(from, dst);
  });
}
