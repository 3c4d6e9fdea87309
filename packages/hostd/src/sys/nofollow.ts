/**
 * File operations of the host daemon (root) on paths a jailed QEMU can write: its VM dir is owned by the
 * jail uid, so QEMU may replace any name in it with a symbolic link (to /etc/shadow, say), a FIFO or a
 * directory at any moment, and the same names are later moved into snapshot dirs. A path operation as root
 * (chown, chmod, copyFile, truncate, readFile, open with O_CREAT) follows such a link and acts on whatever
 * it names; fs.protected_symlinks does not help (the dir is not sticky). So every such operation opens the
 * name once here, with O_NOFOLLOW (a link at the last component fails with ELOOP) and O_NONBLOCK (a FIFO
 * cannot hang the open), checks that the open file is a regular one, and then works on the descriptor
 * (fchown, fchmod, ftruncate, reads and writes through the handle). The directories above the name are
 * the daemon's own (root-owned), so only the last component needs this.
 */
import { constants, type Stats, closeSync, fstatSync, openSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { Socket, connect } from "node:net";
import { HostdError } from "@createos-sandbox/protocol";

const { O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_CREAT, O_EXCL, O_WRONLY } = constants;

/**
 * Opens `path` (flags as `fs.constants`, e.g. `O_RDWR`) refusing a symbolic link and anything that is
 * not a regular file. A missing file still fails with ENOENT (callers decide what that means).
 */
export async function openRegular(path: string, flags: number, mode?: number): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(path, flags | O_NOFOLLOW | O_NONBLOCK, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ELOOP: a link at the last component; ENXIO: a FIFO without a reader, opened for writing.
    if (code === "ELOOP" || code === "ENXIO") throw refused(path, "is not a regular file (a link?)");
    throw e;
  }
  let s: Stats;
  try {
    s = await fh.stat();
  } catch (e) {
    await fh.close();
    throw e;
  }
  if (!s.isFile()) {
    await fh.close();
    throw refused(path, "is not a regular file");
  }
  return fh;
}

/** Runs `fn` on `path` opened by {@link openRegular}, closing it after. */
export async function withRegular<T>(
  path: string,
  flags: number,
  fn: (fh: FileHandle) => Promise<T>,
  mode?: number,
): Promise<T> {
  const fh = await openRegular(path, flags, mode);
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** `fchown` (and `fchmod` when `mode` is given) of the regular file `path`, never a link's target. */
export function ownRegular(path: string, uid: number, gid: number, mode?: number): Promise<void> {
  return withRegular(path, O_RDONLY, async (fh) => {
    await fh.chown(uid, gid);
    if (mode !== undefined) await fh.chmod(mode);
  });
}

/** `fchmod` of the regular file `path`. */
export function chmodRegular(path: string, mode: number): Promise<void> {
  return withRegular(path, O_RDONLY, (fh) => fh.chmod(mode));
}

/** `fsync` of the regular file `path`. */
export function fsyncRegular(path: string): Promise<void> {
  return withRegular(path, O_RDONLY, (fh) => fh.sync());
}

/**
 * The last `maxBytes` of the regular file `path` as text ("" when it is missing): what a diagnostic
 * (an error message, the pid QEMU's jailer wrote) reads, bounded whatever size QEMU made it.
 */
export async function readTail(path: string, maxBytes: number): Promise<string> {
  let fh: FileHandle;
  try {
    fh = await openRegular(path, O_RDONLY);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, size - len);
    return buf.subarray(0, bytesRead).toString("utf8");
  } finally {
    await fh.close();
  }
}

/**
 * Creates `path` new (O_CREAT|O_EXCL: fails on any name already there, a planted link included) for
 * writing, `mode` as given: the daemon's own file even inside a dir another uid may write.
 */
export function createExclusive(path: string, mode: number, extra = 0): Promise<FileHandle> {
  return open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | extra, mode);
}

/** Linux's O_PATH (a descriptor that names an inode without opening it), absent from `fs.constants`. */
const O_PATH = 0o10000000;

/**
 * Connects to the Unix socket `path` in a QEMU-writable dir (QMP, the guest agent, the migration
 * socket): a connect(2) by name follows a link QEMU put there, to any socket root can reach (another
 * VM's agent, a host daemon's). So the name is opened O_PATH|O_NOFOLLOW, must be a socket, and the
 * connect goes through `/proc/self/fd/<n>`, which names that very inode however the name changes
 * meanwhile. Errors (ENOENT while QEMU has not made it yet, the refusal) arrive as the socket's 'error'.
 */
export function connectUnix(path: string): Socket {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | O_NOFOLLOW);
  } catch (e) {
    return failed(e as Error);
  }
  try {
    if (!fstatSync(fd).isSocket()) {
      closeSync(fd);
      return failed(refused(path, "is not a socket"));
    }
  } catch (e) {
    closeSync(fd);
    return failed(e as Error);
  }
  const s = connect(`/proc/self/fd/${fd}`);
  // The kernel resolves the name in connect(2); the descriptor is kept until that has settled.
  const done = () => {
    s.off("connect", done);
    s.off("error", done);
    closeSync(fd);
  };
  s.once("connect", done);
  s.once("error", done);
  return s;
}

function failed(err: Error): Socket {
  const s = new Socket();
  process.nextTick(() => s.destroy(err));
  return s;
}

function refused(path: string, why: string): HostdError {
  return new HostdError("internal", `${path} ${why}: refused (a jailed VMM may have planted it)`);
}

/**
 * Runs `fn` with `/proc/<pid>/fd/<n>` of the regular file `path` opened without following a link: a
 * path API (copyFile) or a program run as root (cp, qemu-img) that opens that name gets this very file,
 * whatever the name in the VM dir has become meanwhile.
 */
export function viaFd<T>(path: string, fn: (fdPath: string) => Promise<T>): Promise<T> {
  return withRegular(path, O_RDONLY, (fh) => fn(`/proc/${process.pid}/fd/${fh.fd}`));
}
