/**
 * The serial console (ttyS0, the kernel's `console=`) written to console.log: the kernel's and the
 * agent's messages when nothing else works, the first place to look when a boot fails.
 */
import { chmod, copyFile, stat, truncate } from "node:fs/promises";
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
 */
export const CONSOLE_LOG_MAX_BYTES = 4 * 2 ** 20;

/** Rotates `path` when over `maxBytes`; returns whether it did. */
export async function capConsoleLog(path: string, maxBytes = CONSOLE_LOG_MAX_BYTES): Promise<boolean> {
  const s = await stat(path).catch(() => undefined);
  if (!s || s.size <= maxBytes) return false;
  const old = `${path}.1`;
  await copyFile(path, old);
  // The daemon's copy, not the guest's: QEMU (another uid) has no business reading it.
  await chmod(old, 0o600);
  await truncate(path, 0);
  return true;
}
