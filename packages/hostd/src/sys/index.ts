/**
 * The one privileged module: every program the host daemon runs (`ip`, `nft`, `qemu-img`,
 * `qemu-system-*`, `cp`, `sysctl`) is started here, always with an argument array and never through a
 * shell, so a sandbox id or a path can never become shell syntax. Errors carry the command line and the
 * program's stderr so a failure in the logs says exactly what was run and why it failed.
 */
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { HostdError } from "@createos-sandbox/protocol";

export class SysError extends HostdError {
  constructor(
    readonly command: string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    detail?: string,
  ) {
    super(
      "internal",
      `${command.join(" ")} failed${exitCode !== null ? ` (exit ${exitCode})` : ""}: ${(detail ?? stderr).trim().slice(0, 2000) || "no output"}`,
    );
    this.name = "SysError";
  }
}

export interface RunOptions {
  /** Bytes fed to stdin (e.g. an nft script for `nft -f -`). */
  input?: string | Buffer;
  timeoutMs?: number;
  /** Run inside network namespace `netns` (via `ip netns exec`). */
  netns?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

function wrap(cmd: string, args: string[], netns?: string): [string, string[]] {
  if (netns === undefined) return [cmd, args];
  return ["ip", ["netns", "exec", netns, cmd, ...args]];
}

/** Runs a program to completion; rejects with {@link SysError} on a non-zero exit or timeout. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = wrap(cmd, args, opts.netns);
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      argv,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: string };
          const code = typeof e.code === "number" ? e.code : null;
          const detail = e.killed ? `timed out (${opts.timeoutMs ?? 60_000} ms) ${stderr}` : undefined;
          const detail2 = e.code === "ENOENT" ? `${file} is not installed` : detail;
          reject(new SysError([file, ...argv], stderr, code, detail2));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

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

/**
 * Starts a program that must outlive this process (QEMU with `-daemonize`): waits for the launcher to
 * exit (QEMU's parent exits once the VM is set up, or with an error on stderr).
 */
export function spawnDaemon(
  cmd: string,
  args: string[],
  opts: { netns?: string; timeoutMs?: number } = {},
): Promise<void> {
  const [file, argv] = wrap(cmd, args, opts.netns);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ["ignore", "ignore", "pipe"], detached: true });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 16_384) stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new SysError([file, ...argv], stderr, null, `did not start within ${opts.timeoutMs ?? 30_000} ms`),
      );
    }, opts.timeoutMs ?? 30_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new SysError([file, ...argv], stderr, null, `${file}: ${err.message}`));
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else
        reject(
          new SysError([file, ...argv], stderr, code, signal ? `killed by ${signal} ${stderr}` : undefined),
        );
    });
  });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** argv of a live process, or undefined when it is gone. */
export function procCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    const parts = raw.split("\0");
    if (parts.at(-1) === "") parts.pop();
    return parts;
  } catch {
    return undefined;
  }
}

/** True while `pid` is a zombie or gone (a daemonized QEMU is reparented, so a zombie is brief). */
export function procGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Proportional set size of a process, bytes (`/proc/<pid>/smaps_rollup`). */
export function pssBytes(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const m = /^Pss:\s+(\d+) kB/m.exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function memAvailableMib(): number {
  try {
    const text = readFileSync("/proc/meminfo", "utf8");
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
    return m ? Math.floor(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

export function hostTscKhz(): number {
  try {
    const t = readFileSync("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "utf8").trim();
    if (/^\d+$/.test(t)) return Number(t);
  } catch {
    // fall through to cpuinfo
  }
  try {
    const text = readFileSync("/proc/cpuinfo", "utf8");
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(text);
    if (m) return Math.round(Number(m[1]) * 1000);
  } catch {
    // unknown
  }
  return 2_000_000;
}
