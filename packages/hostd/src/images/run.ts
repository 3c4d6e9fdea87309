/**
 * Minimal private process runner for image builds (argument arrays only, never a shell). It lives here
 * until `src/sys/` becomes the one privileged module; keep it small so it can move there.
 */
import { spawn, spawnSync } from "node:child_process";
import { constants, accessSync } from "node:fs";

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with every complete line of stdout and stderr (for progress parsing). */
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  /** Kill the process group (SIGKILL) after this many ms. */
  timeoutMs?: number;
  /** Aborting kills the child (SIGTERM; make passes it on to its jobs). */
  signal?: AbortSignal;
  stdin?: Buffer | string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How much of each output stream is kept for results and error messages. */
const KEEP_BYTES = 64 * 1024;

export class RunError extends Error {
  constructor(
    readonly cmd: string,
    readonly result: RunResult,
  ) {
    const lines = (result.stderr.trim() || result.stdout.trim()).split("\n");
    // usage errors say what is wrong first, build failures last: keep both ends
    const tail =
      lines.length <= 16 ? lines.join("\n") : [...lines.slice(0, 3), "…", ...lines.slice(-12)].join("\n");
    super(`${cmd} failed (exit ${result.code})${tail ? `:\n${tail}` : ""}`);
    this.name = "RunError";
  }
}

/** Runs `cmd args…`; resolves on exit 0, rejects with {@link RunError} otherwise. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await runRaw(cmd, args, opts);
  if (r.code !== 0) throw new RunError([cmd, ...args.slice(0, 3)].join(" "), r);
  return r;
}

/** Like {@link run} but resolves with whatever exit code the process had. */
export function runRaw(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // with a timeout the child gets its own process group so the kill reaches its children too; without
    // one it stays in ours, so a Ctrl-C of the host daemon also stops a kernel build it started
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      detached: opts.timeoutMs !== undefined,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const out = { stdout: "", stderr: "" };
    const partial = { stdout: "", stderr: "" };
    const take = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      const s = chunk.toString("utf8");
      out[stream] = (out[stream] + s).slice(-KEEP_BYTES);
      if (!opts.onLine) return;
      const lines = (partial[stream] + s).split("\n");
      partial[stream] = lines.pop() ?? "";
      for (const l of lines) opts.onLine(l, stream);
    };
    child.stdout?.on("data", take("stdout"));
    child.stderr?.on("data", take("stderr"));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        try {
          if (child.pid) process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }, opts.timeoutMs);
    }
    child.on("error", (e) => {
      // an abort also emits "error"; "close" follows and reports the exit
      if (e.name === "AbortError") return;
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      if (opts.onLine) {
        if (partial.stdout) opts.onLine(partial.stdout, "stdout");
        if (partial.stderr) opts.onLine(partial.stderr, "stderr");
      }
      resolve({ code: code ?? (signal ? 128 : 1), stdout: out.stdout, stderr: out.stderr });
    });
    if (opts.stdin !== undefined) child.stdin?.end(opts.stdin);
  });
}

/** Synchronous variant for cheap queries (version strings) where an async API is not possible. */
export function runSync(cmd: string, args: string[]): RunResult {
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
