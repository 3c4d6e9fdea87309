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
import { chmod, chown, mkdir, open, rm } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { HostdError } from "@createos-sandbox/protocol";
import { goBuild } from "../images/agent.js";
import { hashTree } from "../images/util.js";
import { SingleFlight } from "../sys/fs.js";
import { ownRegular, withRegular } from "../sys/nofollow.js";

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

/**
 * The files below a qcow2 image: its backing file, that one's backing file, … (absolute paths), read from
 * the headers (offset 8: backing file name offset, 16: its length) so the jail can bind each of them.
 */
export async function backingChain(image: string): Promise<string[]> {
  const chain: string[] = [];
  let cur = image;
  for (let depth = 0; depth < 64; depth++) {
    const fh = await open(cur, "r");
    try {
      const head = Buffer.alloc(20);
      await fh.read(head, 0, 20, 0);
      if (head.readUInt32BE(0) !== 0x514649fb) return chain; // "QFI\xfb": not qcow2 (the raw ext4 bottom)
      const off = Number(head.readBigUInt64BE(8));
      const len = head.readUInt32BE(16);
      if (off === 0 || len === 0) return chain;
      const name = Buffer.alloc(len);
      await fh.read(name, 0, len, off);
      const next = name.toString("utf8");
      cur = isAbsolute(next) ? next : resolve(dirname(cur), next);
      chain.push(cur);
    } finally {
      await fh.close();
    }
  }
  throw new HostdError("internal", `disk ${image}: backing chain deeper than 64`);
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
 * Hands the VM's own files to its uid just before launch: the VM dir (QEMU creates its sockets and
 * console there; 0700), the RAM file (0600: nobody else's to read), the top disk layer and console. A
 * resumed or forked VM brings files an earlier VM (another uid) owned — and an earlier QEMU may have
 * replaced any of them with a link to a host file (a pause moves them as they are), so each is opened
 * without following a link and must be a regular file (sys/nofollow.ts); the dir itself is a name in
 * the daemon's own vms/, out of QEMU's reach.
 */
export async function ownVmFiles(
  dir: string,
  files: { ram?: string; others: string[] },
  ids: { uid: number; gid: number },
): Promise<void> {
  await chown(dir, ids.uid, ids.gid);
  await chmod(dir, 0o700);
  if (files.ram) {
    // A cold boot has no RAM file yet: made empty here with our mode, QEMU sizes it (ftruncate) at start.
    await withRegular(
      files.ram,
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
