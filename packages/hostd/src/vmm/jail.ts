/**
 * The jail every QEMU runs in (model: Firecracker's jailer). The host daemon is root; QEMU never is:
 *
 *   createos-jailer …                   jailer/ (Go), built once per source version into the cache
 *     launcher (host namespaces)        joins the VM's cgroup (sys/cgroup.ts), so QEMU is born in it; enters
 *                                       /run/netns/csb-<slot> (net/index.ts); re-executes itself into
 *                                       new mount + pid namespaces; writes the jail's host pid, exits
 *     jail (pid 1 of its pid ns)        QEMU keeps that pid: the host sees its real one in qemu.pid
 *       pivot_root into a 1 MiB tmpfs   holding only /usr (read-only: QEMU's binary, libraries, firmware),
 *                                       the kernel and every disk layer below the VM's own (read-only),
 *                                       the VM dir (RAM file, top disk layer, sockets, console), and the
 *                                       device nodes it needs (null, urandom, net/tun, kvm), each at its
 *                                       own absolute path, so QEMU's command line and the qcow2 backing
 *                                       chains are the same inside and out
 *       uid/gid = base + slot           one per VM (CREATEOS_SANDBOX_JAIL_UID_BASE, default 200000, never
 *                                       0); no groups, an empty bounding set and no capabilities
 *       no_new_privs, exec QEMU
 *     QEMU -sandbox on,…,spawn=deny     its own seccomp filter (devices/sandbox.ts)
 *
 * What QEMU needed root or a shell for moved out: the TAP is created owned by the VM's uid (net/index.ts),
 * the snapshot's device state crosses a Unix socket (migration.ts), the files it opens are chowned to its
 * uid just before launch. The host daemon still reaches everything (it is root), and everything in the
 * VM dir is deleted with it.
 */
import { constants, existsSync } from "node:fs";
import { chmod, chown, lstat, mkdir, realpath, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { HostdError } from "@createos-sandbox/protocol";
import { goBuild } from "../images/agent.js";
import { hashTree } from "../images/util.js";
import { SingleFlight } from "../sys/fs.js";
import { openRegular, ownRegular, withRegular } from "../sys/nofollow.js";

export const DEFAULT_UID_BASE = 200_000;

/** The ids a VM in `slot` runs as. Slots are small, so base + slot stays clear of 0 and of 2^31. */
export function jailIds(slot: number, env = process.env): { uid: number; gid: number } {
  const raw = env.CREATEOS_SANDBOX_JAIL_UID_BASE;
  const base = raw === undefined || raw === "" ? DEFAULT_UID_BASE : Number(raw);
  if (!Number.isInteger(base) || base < 1 || base + slot >= 2 ** 31 - 1)
    throw new HostdError("internal", `CREATEOS_SANDBOX_JAIL_UID_BASE=${raw}: want an integer from 1 to 2^31`);
  return { uid: base + slot, gid: base + slot };
}

export interface JailConfig {
  uid: number;
  gid: number;
  /** Image cache: the compiled jailer lives in `<cache>/jailer/<hash>/`. */
  cacheDir: string;
  /** The VM's cgroup directories (one per hierarchy), joined by the jailer before QEMU exists. */
  cgroups?: string[];
  /**
   * The dirs every file below the VM's own disk layer must lie in (`diskChain`): the daemon's frozen
   * layers, warm disks and image rootfses. A backing name elsewhere fails the launch.
   */
  diskRoots: string[];
}

/** `packages/hostd/jailer/` (a Go module): the same relative path from `src/vmm/` and `dist/vmm/`. */
export function jailerSourceDir(): string {
  return fileURLToPath(new URL("../../jailer/", import.meta.url));
}

const builds = new SingleFlight<string>();

/**
 * The jailer binary for this source version, built on first use (`go build`, static, standard library
 * only — like the guest agent), shared by data dirs.
 */
export function ensureJailer(cacheDir: string): Promise<string> {
  const src = jailerSourceDir();
  const dir = join(cacheDir, "jailer", hashTree(src).slice(0, 16));
  const bin = join(dir, "createos-jailer");
  if (existsSync(bin)) return Promise.resolve(bin);
  return builds.do(bin, async () => {
    await mkdir(join(dir, "root"), { recursive: true, mode: 0o755 });
    await goBuild(src, ".", bin);
    return bin;
  });
}

/** The directory the jailer mounts each jail's tmpfs on (inside the jail's own mount namespace only). */
export function jailRootOf(jailer: string): string {
  return join(dirname(jailer), "root");
}

/** One file of a disk's chain and how it is read: qcow2 layers above, the raw ext4 bottom. */
export interface DiskLayer {
  path: string;
  format: "qcow2" | "raw";
}

/** What a layer below a VM's own may be: a frozen layer, a warm disk, or an image's rootfs. */
const LAYER_NAME = /\.(qcow2|ext4)$/;

/**
 * A disk's chain, the image itself first, then its backing file, that one's backing file, … (absolute
 * paths), read from the qcow2 headers (offset 8: backing file name offset, 16: its length) so the jail
 * can bind each of them and `qemu-img` can be told each of them.
 *
 * Those headers are not the daemon's word: every layer was some VM's writable top before it was frozen,
 * and a compromised QEMU can write any backing name into it. So each file is opened without following a
 * link and must be a regular file (sys/nofollow.ts), and with `roots` (the dirs that hold what the daemon
 * itself made disks of: frozen layers, warm disks, image rootfses) every name below the image must be a
 * normalised absolute `*.qcow2` or `*.ext4` path that resolves (realpath) inside one of them, or the
 * chain is refused: a rewritten name can no longer bind a host file into a jail or feed it to qemu-img.
 */
export async function diskChain(image: string, roots?: string[]): Promise<DiskLayer[]> {
  const realRoots = roots && (await Promise.all(roots.map((r) => realpath(r).catch(() => undefined))));
  const chain: DiskLayer[] = [];
  let cur = image;
  for (let depth = 0; depth < 64; depth++) {
    const fh = await openRegular(cur, constants.O_RDONLY);
    let next: string;
    try {
      const head = Buffer.alloc(20);
      const { bytesRead } = await fh.read(head, 0, 20, 0);
      // "QFI\xfb": qcow2; anything else is the raw ext4 bottom
      if (bytesRead < 20 || head.readUInt32BE(0) !== 0x514649fb) {
        chain.push({ path: cur, format: "raw" });
        return chain;
      }
      chain.push({ path: cur, format: "qcow2" });
      const off = Number(head.readBigUInt64BE(8));
      const len = head.readUInt32BE(16);
      if (off === 0 || len === 0) return chain;
      // qcow2 caps the name at 1023 bytes: a longer one is not a header qemu-img wrote.
      if (len > 1023) throw refusedLayer(image, `backing name of ${len} bytes in ${cur}`);
      const name = Buffer.alloc(len);
      await fh.read(name, 0, len, off);
      const raw = name.toString("utf8");
      next = isAbsolute(raw) ? raw : resolve(dirname(cur), raw);
    } finally {
      await fh.close();
    }
    if (realRoots) await checkLayer(image, next, realRoots);
    cur = next;
  }
  throw new HostdError("internal", `disk ${image}: backing chain deeper than 64`);
}

/**
 * A `json:` image spec that names every layer of `chain` explicitly (its `backing`, down to `null` under
 * the last): a qemu-img run as root on it reads those files and no backing name from any header, even one
 * rewritten after the chain was checked. `top` replaces the first layer's path (a /proc/<pid>/fd/<n> of a
 * descriptor opened without following a link).
 */
export function chainSpec(chain: DiskLayer[], top?: string): string {
  let spec: Record<string, unknown> | null = null;
  for (let i = chain.length - 1; i >= 0; i--) {
    const l = chain[i] as DiskLayer;
    const filename = i === 0 && top ? top : l.path;
    spec = {
      driver: l.format,
      file: { driver: "file", filename },
      ...(l.format === "qcow2" ? { backing: spec } : {}),
    };
  }
  return `json:${JSON.stringify(spec)}`;
}

/** The files below a qcow2 image (its `diskChain` without the image itself): what its jail binds. */
export async function backingChain(image: string, roots?: string[]): Promise<string[]> {
  return (await diskChain(image, roots)).slice(1).map((l) => l.path);
}

async function checkLayer(image: string, p: string, realRoots: (string | undefined)[]): Promise<void> {
  if (p !== resolve(p) || !LAYER_NAME.test(p)) throw refusedLayer(image, JSON.stringify(p));
  const real = await realpath(p).catch(() => undefined);
  if (!real || !realRoots.some((r) => r !== undefined && real.startsWith(`${r}/`)))
    throw refusedLayer(image, `${JSON.stringify(p)}, outside the daemon's layer and image dirs`);
}

function refusedLayer(image: string, what: string): HostdError {
  return new HostdError(
    "internal",
    `disk ${image}: backing file ${what} refused (a rewritten qcow2 header?)`,
  );
}

/** What the VMM may open, besides /usr: read-only files, its writable dir, device nodes; where it runs. */
export interface JailMounts {
  cg?: string[];
  /** The network namespace (a /run/netns path) the VMM runs in. */
  netns?: string;
  ro: string[];
  rw: string[];
  dev: string[];
}

/** The launch argv: `createos-jailer ROOT PIDFILE UID GID cg … netns … ro … rw … dev … -- qemu args`. */
export function jailArgv(
  jailer: string,
  j: { uid: number; gid: number; pidfile: string },
  m: JailMounts,
  program: string,
  args: string[],
): string[] {
  const mounts = [
    ...(m.cg ?? []).flatMap((p) => ["cg", p]),
    ...(m.netns ? ["netns", m.netns] : []),
    ...m.ro.flatMap((p) => ["ro", p]),
    ...m.rw.flatMap((p) => ["rw", p]),
    ...m.dev.flatMap((p) => ["dev", p]),
  ];
  return [jailRootOf(jailer), j.pidfile, String(j.uid), String(j.gid), ...mounts, "--", program, ...args];
}

/**
 * Hands the VM's own files to its uid just before launch: the RAM file (0600: nobody else's to read), the
 * top disk layer and the console log (made here if missing), and `run/`, the only dir QEMU creates names
 * in (its QMP, agent and migration sockets; 0700). The VM dir itself stays root's (0711: QEMU may open
 * what it is given, not list, create, rename or remove), so a compromised QEMU can neither rewrite the
 * record the daemon re-adopts from (vm.json: its slot, cgroup, launch dir, egress, networks) nor plant a
 * name there. A resumed or forked VM brings files an earlier VM (another uid) owned — and an earlier QEMU
 * may have replaced one with a link to a host file before this rule (or in an older daemon's layout), so
 * each is opened without following a link and must be a regular file (sys/nofollow.ts).
 */
export async function ownVmFiles(
  dir: string,
  files: { ram?: string; others: string[]; create?: string[] },
  ids: { uid: number; gid: number },
): Promise<void> {
  await chown(dir, 0, 0);
  await chmod(dir, 0o711);
  // From here no one but root changes the dir's names. A `run` that is not a real dir (an older layout's
  // QEMU could have made it a link) is removed, not followed.
  const run = join(dir, "run");
  const st = await lstat(run).catch(() => undefined);
  if (st && !st.isDirectory()) await rm(run, { force: true });
  if (!st?.isDirectory()) await mkdir(run, { mode: 0o700 });
  await chown(run, ids.uid, ids.gid);
  await chmod(run, 0o700);
  const made = [...(files.ram ? [files.ram] : []), ...(files.create ?? [])];
  for (const f of made) {
    // A cold boot has no RAM file yet: made empty here with our mode, QEMU sizes it (ftruncate) at start.
    await withRegular(
      f,
      constants.O_WRONLY | constants.O_CREAT,
      async (fh) => {
        await fh.chown(ids.uid, ids.gid);
        await fh.chmod(0o600);
      },
      0o600,
    );
  }
  for (const f of files.others) {
    try {
      await ownRegular(f, ids.uid, ids.gid);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
}

/** Removes a stale pidfile temp the jailer may have left when it failed half way. */
export async function clearPidfile(pidfile: string): Promise<void> {
  await rm(pidfile, { force: true });
  await rm(`${pidfile}.tmp`, { force: true });
}
