/**
 * The one privileged module: every program the host daemon runs goes through {@link run} (sys/run.ts) or
 * {@link spawnDetached} (sys/spawn.ts), always with an argument array, never through a shell. This file
 * holds the thin wrappers for the host tools the engine uses and re-exports the rest of sys/.
 */
import { type RunResult, run } from "./run.js";

export {
  NO_TIMEOUT,
  type RawResult,
  type RunOptions,
  type RunResult,
  SysError,
  run,
  runRaw,
  runSync,
  which,
} from "./run.js";
export { type Detached, spawnDaemon, spawnDetached } from "./spawn.js";
export { hostTscKhz, memAvailableMib, pidAlive, procCmdline, procGone, pssBytes, signal } from "./proc.js";

/** `ip …` in the root namespace. */
export function ip(...args: string[]): Promise<RunResult> {
  return run("ip", args);
}

/** Applies an nftables script atomically (`nft -f -`): the whole batch lands or none of it. */
export function nft(script: string, netns?: string): Promise<RunResult> {
  return run("nft", ["-f", "-"], { input: script, netns });
}

export function nftCmd(args: string[], netns?: string): Promise<RunResult> {
  return run("nft", args, { netns });
}

export function sysctl(key: string, value: string, netns?: string): Promise<RunResult> {
  return run("sysctl", ["-q", "-w", `${key}=${value}`], { netns });
}

export function qemuImg(args: string[]): Promise<RunResult> {
  return run("qemu-img", args, { timeoutMs: 120_000 });
}

/** Copy keeping holes, so a 2 GiB RAM file with 100 MiB touched costs 100 MiB of I/O and disk. */
export async function cpSparse(src: string, dst: string): Promise<void> {
  await run("cp", ["--sparse=always", "--reflink=auto", src, dst], { timeoutMs: 300_000 });
}

/** An XFS filesystem with reflinks (shared extents) in `image` (an existing sparse file of its size). */
export async function mkfsXfsReflink(image: string): Promise<void> {
  // -K: no discard pass over a file that is all holes anyway. cowextsize=1 (inherited by every file): a
  // guest's 4 KiB write to a page a fork shares unshares that block only, not XFS's default 128 KiB.
  await run("mkfs.xfs", ["-q", "-K", "-m", "reflink=1", "-d", "cowextsize=1", image], { timeoutMs: 120_000 });
}

/**
 * Loop-mounts an XFS image on `dir`; the loop device goes with the unmount (autoclear). No `discard`:
 * online discard made every fsync on the store wait for the hole punches of the files deleted before it
 * (a create's fsynced vm.json: 70 ms instead of 12 after a destroy); {@link fstrim} at close instead.
 */
export async function mountXfsImage(image: string, dir: string): Promise<void> {
  await run("mount", ["-t", "xfs", "-o", "loop,nosuid,nodev", image, dir], { timeoutMs: 60_000 });
}

/** Gives the blocks a filesystem no longer uses back to the device (an image: holes in its file). */
export async function fstrim(dir: string): Promise<void> {
  await run("fstrim", [dir], { timeoutMs: 300_000 });
}

export async function umount(dir: string): Promise<void> {
  await run("umount", [dir], { timeoutMs: 60_000 });
}
