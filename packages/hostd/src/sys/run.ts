/**
 * The one process runner. Every program the host daemon runs to completion (`ip`, `nft`, `qemu-img`, `cp`,
 * `make`, `mmdebstrap`, `go` …) starts here, always with an argument array and never through a shell, so
 * a sandbox id or a path can never become shell syntax. Output can be streamed line by line (progress
 * parsing), a run can be aborted or time out, and a failure is a {@link SysError} naming the command line
 * and the tail of what the program said, so the logs show exactly what was run and why it failed.
 */
import { spawn, spawnSync } from "node:child_process";
import { constants, accessSync } from "node:fs";
import { HostdError } from "@createos-sandbox/protocol";

/** A program that failed: its command line, its stderr (tail) and exit code; the message says all three. */
export class SysError extends HostdError {
  constructor(
    readonly command: string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    detail?: string,
  ) {
    const exit = exitCode !== null ? ` (exit ${exitCode})` : "";
    super("internal", `${commandLine(command)} failed${exit}: ${errorTail(detail ?? stderr) || "no output"}`);
    this.name = "SysError";
  }
}

/** The command line for a message: a build's argv (mmdebstrap's package list) can run to kilobytes. */
function commandLine(command: string[]): string {
  const s = command.join(" ");
  return s.length <= 400 ? s : `${s.slice(0, 400)}…`;
}

/** Usage errors say what is wrong first, build failures last: keep both ends of a long output. */
function errorTail(text: string): string {
  const lines = text.trim().split("\n");
  const kept = lines.length <= 16 ? lines : [...lines.slice(0, 3), "…", ...lines.slice(-12)];
  const s = kept.join("\n");
  return s.length <= 2000 ? s : `…${s.slice(-2000)}`;
}

/** For builds that take as long as they take (a kernel compile on a busy 2-core host: an hour). */
export const NO_TIMEOUT = Number.POSITIVE_INFINITY;

export interface RunOptions {
  /** Bytes fed to stdin (e.g. an nft script for `nft -f -`); without it stdin is /dev/null. */
  input?: string | Buffer;
  /**
   * Kill the program's whole process group (SIGKILL) after this many ms; default 60 s. A program with a
   * finite timeout runs in its own process group so the kill reaches its children too; with
   * {@link NO_TIMEOUT} it stays in ours, so a Ctrl-C of the host daemon also stops a build it started.
   */
  timeoutMs?: number;
  /** Aborting sends SIGTERM (make passes it on to its jobs); the run then fails as aborted. */
  signal?: AbortSignal;
  /** Called with every complete line of stdout and stderr (the last one even without a newline). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  /** Run inside network namespace `netns` (via `ip netns exec`). */
  netns?: string;
  /**
   * Run as this uid/gid (no supplementary groups, no capabilities): for programs that parse what a guest
   * made, so that a bug in them is not root's.
   */
  uid?: number;
  gid?: number;
  /** Descriptors the program gets as 3, 4, … (it opens them as /dev/fd/3 …: no path it must be able to reach). */
  fds?: number[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RawResult extends RunResult {
  /** Exit code; 128 when a signal killed the program (`signal` says which). */
  code: number;
  signal?: NodeJS.Signals;
  timedOut: boolean;
  aborted: boolean;
}

/** How much output is kept: all of `ip -o link show` on a full host (~4 MB), the tail of a long build. */
const KEEP_CHARS = 64 * 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 60_000;

/** The argv actually executed: `ip netns exec <ns> cmd …` when a namespace is given. */
export function inNetns(cmd: string, args: string[], netns?: string): [string, string[]] {
  if (netns === undefined) return [cmd, args];
  return ["ip", ["netns", "exec", netns, cmd, ...args]];
}

/** Collects a stream's text, dropping the oldest part beyond `max` characters. */
export class OutputTail {
  private chunks: string[] = [];
  private size = 0;

  constructor(private readonly max = KEEP_CHARS) {}

  push(s: string): void {
    this.chunks.push(s);
    this.size += s.length;
    while (this.size > this.max && this.chunks.length > 1) this.size -= this.chunks.shift()?.length ?? 0;
  }

  text(): string {
    const s = this.chunks.join("");
    return s.length > this.max ? s.slice(-this.max) : s;
  }
}

/**
 * Runs `cmd args…` to completion and resolves with its exit, whatever it was; rejects (with a
 * {@link SysError}) only when the program cannot be started at all.
 */
export function runRaw(cmd: string, args: string[], opts: RunOptions = {}): Promise<RawResult> {
  const [file, argv] = inNetns(cmd, args, opts.netns);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const ownGroup = Number.isFinite(timeoutMs);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe", ...(opts.fds ?? [])],
      detached: ownGroup,
      // libuv drops the supplementary groups when it sets the ids; the kernel then clears the capabilities
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    const out = { stdout: new OutputTail(), stderr: new OutputTail() };
    const partial = { stdout: "", stderr: "" };
    const take = (stream: "stdout" | "stderr") => (s: string) => {
      out[stream].push(s);
      if (!opts.onLine) return;
      const lines = (partial[stream] + s).split("\n");
      partial[stream] = lines.pop() ?? "";
      for (const l of lines) opts.onLine(l, stream);
    };
    child.stdout?.setEncoding("utf8").on("data", take("stdout"));
    child.stderr?.setEncoding("utf8").on("data", take("stderr"));
    let timedOut = false;
    let aborted = false;
    const kill = (sig: NodeJS.Signals) => {
      try {
        if (ownGroup && child.pid) process.kill(-child.pid, sig);
        else child.kill(sig);
      } catch {
        // already gone
      }
    };
    const timer = ownGroup
      ? setTimeout(() => {
          timedOut = true;
          kill("SIGKILL");
        }, timeoutMs)
      : undefined;
    const onAbort = () => {
      aborted = true;
      kill("SIGTERM");
    };
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
    const settle = () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    };
    child.on("error", (e: NodeJS.ErrnoException) => {
      settle();
      const why = e.code === "ENOENT" ? `${file} is not installed` : `${file}: ${e.message}`;
      reject(new SysError([file, ...argv], "", null, why));
    });
    child.on("close", (code, signal) => {
      settle();
      if (opts.onLine) {
        if (partial.stdout) opts.onLine(partial.stdout, "stdout");
        if (partial.stderr) opts.onLine(partial.stderr, "stderr");
      }
      resolve({
        code: code ?? (signal ? 128 : 1),
        ...(signal ? { signal } : {}),
        stdout: out.stdout.text(),
        stderr: out.stderr.text(),
        timedOut,
        aborted,
      });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a program to completion; rejects with {@link SysError} on a non-zero exit, timeout or abort. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await runRaw(cmd, args, opts);
  if (r.code === 0 && !r.timedOut && !r.aborted) return { stdout: r.stdout, stderr: r.stderr };
  const [file, argv] = inNetns(cmd, args, opts.netns);
  const why = r.timedOut
    ? `timed out (${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms) ${r.stderr}`
    : r.aborted
      ? `aborted ${r.stderr}`
      : r.signal
        ? `killed by ${r.signal} ${r.stderr}`
        : // a program that reports on stdout only (some builds) still says why
          r.stderr.trim() || r.stdout;
  throw new SysError([file, ...argv], r.stderr, r.signal ? null : r.code, why);
}

/** Synchronous variant for cheap queries (version strings) where an async API is not possible. */
export function runSync(cmd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  return { code: r.error ? 127 : (r.status ?? 1), stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Absolute path of `cmd` found in PATH (plus the sbin dirs non-root PATHs often lack), or undefined. */
export function which(cmd: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"];
  for (const d of dirs) {
    if (!d) continue;
    const p = `${d}/${cmd}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not in this dir
    }
  }
  return undefined;
}
