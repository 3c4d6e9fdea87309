/**
 * File-system primitives every part of the host daemon shares: the one crash-safe write, and the one
 * single-flight. Records on disk (vm.json, meta.json, the namespace pool) are how a restarted daemon
 * re-adopts its VMs, so a write must leave either the old or the new contents, never a torn file, even
 * across a power cut: temp file, fsync it, rename over, fsync the directory (the rename itself is only
 * durable once the directory entry is).
 */
import { constants } from "node:fs";
import { chmod, mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";

let seq = 0;

/** Replaces `path` with `data` atomically and durably. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${++seq}`;
  // A new file of our own (O_EXCL): a record's dir may be a VM dir, whose QEMU could have put a link at
  // this name (which "w" would follow, truncating and writing its target). A stale temp of an earlier
  // daemon with the same pid is cleared first; a name planted after that fails the write.
  await rm(tmp, { force: true });
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    mode,
  );
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(path));
}

/** `writeFileAtomic` of a JSON document (pretty-printed: these files are read by people debugging). */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Makes a rename or create inside `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Makes `dir` (and missing parents) and keeps it 0700 when it is ours: what lies below (RAM files,
 * snapshots, records, the database with the sandboxes' secrets) is nobody else's to list or read. Jailed
 * VMMs are unaffected: their files are bind-mounted into their jails by root, not reached through it.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const s = await stat(dir);
  if (s.uid === process.getuid?.() && (s.mode & 0o077) !== 0) await chmod(dir, 0o700);
}

/** Concurrent callers asking for the same key share one in-flight promise; failures are not cached. */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  do(key: string, fn: () => Promise<T>): Promise<T> {
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }
}

/** An async mutex: each `run` starts once every earlier one has settled, in call order. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  /** Calls running or waiting their turn (a test sees a call blocked on the lock by it). */
  pending = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    this.pending++;
    const p = this.tail.then(fn).finally(() => {
      this.pending--;
    });
    this.tail = p.catch(() => undefined);
    return p;
  }
}
