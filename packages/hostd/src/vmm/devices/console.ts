/**
 * The serial console (ttyS0, the kernel's `console=`) written to console.log: the kernel's and the
 * agent's messages when nothing else works, the first place to look when a boot fails.
 */
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, rename, rm } from "node:fs/promises";
import { createExclusive, openRegular } from "../../sys/nofollow.js";
import type { MachinePaths } from "../driver.js";

export function consoleArgs(p: MachinePaths): string[] {
  // append: a restored VM keeps the console history of the boot it came from.
  return ["-chardev", `file,id=con,path=${p.console},append=on`, "-serial", "chardev:con"];
}

/**
 * The console log's cap: a guest printing to ttyS0 in a loop would otherwise fill the host's disk. QEMU
 * writes with O_APPEND (append=on), so once the log is over `maxBytes` it is copied to `console.log.1`
 * (the previous copy replaced) and truncated in place, and QEMU's next write lands at its new end. The
 * host daemon checks every few seconds, so the two files stay near `maxBytes` each; the bytes written
 * between the copy and the truncation are lost, which a diagnostic log can afford.
 *
 * The VM dir is QEMU's (its jail uid owns it), so both names may be links it planted (sys/nofollow.ts):
 * the log is opened once without following a link and copied and truncated through that descriptor, and
 * the copy is written to a new file of the daemon's own (O_EXCL, random name) renamed over
 * `console.log.1`, which replaces whatever name is there rather than writing through it.
 */
export const CONSOLE_LOG_MAX_BYTES = 4 * 2 ** 20;

/** Rotates `path` when over `maxBytes`; returns whether it did. */
export async function capConsoleLog(path: string, maxBytes = CONSOLE_LOG_MAX_BYTES): Promise<boolean> {
  let log: FileHandle;
  try {
    log = await openRegular(path, constants.O_RDWR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
  try {
    const { size } = await log.stat();
    if (size <= maxBytes) return false;
    try {
      await copyOut(log, size, `${path}.1`);
    } finally {
      // Even when the copy failed: the cap protects the host's disk, the copy is only a courtesy.
      await log.truncate(0);
    }
    return true;
  } finally {
    await log.close();
  }
}

/** Copies the first `size` bytes of `src` into a fresh 0600 file renamed to `dest`. */
async function copyOut(src: FileHandle, size: number, dest: string): Promise<void> {
  const tmp = `${dest}.tmp-${randomUUID()}`;
  // The daemon's copy, not the guest's: QEMU (another uid) has no business reading it.
  const out = await createExclusive(tmp, 0o600);
  try {
    const buf = Buffer.alloc(Math.min(size, 1 << 20));
    for (let pos = 0; pos < size; ) {
      const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) break;
      await out.write(buf, 0, bytesRead);
      pos += bytesRead;
    }
    await out.close();
    await rename(tmp, dest);
  } catch (e) {
    await out.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
}
