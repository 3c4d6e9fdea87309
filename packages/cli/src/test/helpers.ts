/**
 * Test harness for the built `createos` binary: runs it as a subprocess with a temp HOME, starts the
 * real `createos-sandbox serve` (never a stand-in), and drives interactive commands in tmux.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = path.resolve(here, "../../bin/createos.js");
export const SERVER_MAIN = path.resolve(here, "../../../server/dist/main.js");

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The parent's environment minus anything that would leak credentials or output settings in. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith("CREATEOS_") || k === "NO_COLOR") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `createos …` to completion (stdin is `input`, closed afterwards). */
export function runCli(
  args: string[],
  opts: { env?: Record<string, string>; input?: string | Buffer; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: opts.env ?? cleanEnv(),
      cwd: opts.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`createos ${args.join(" ")} timed out; stderr: ${Buffer.concat(err).toString()}`));
    }, opts.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
    child.stdin.end(opts.input ?? "");
  });
}

/** Runs a bash script (pipefail, no errexit) with `createos` on PATH, for the verbatim seed recipes. */
export function runBash(
  script: string,
  env: Record<string, string>,
  timeoutMs = 300_000,
): Promise<RunResult> {
  const binDir = tempDir("cli-bin-");
  fs.writeFileSync(
    path.join(binDir, "createos"),
    `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} "$@"\n`,
    {
      mode: 0o755,
    },
  );
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-o", "pipefail", "-c", script], {
      env: { ...env, PATH: `${binDir}:${env.PATH ?? process.env.PATH}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      fs.rmSync(binDir, { recursive: true, force: true });
      resolve({
        code: code ?? 1,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
  });
}

export interface Server {
  url: string;
  key: string;
  dataDir: string;
  logs: string[];
  stop(): Promise<void>;
}

/**
 * Starts the real control plane on a free loopback port. `engine: true` runs the local host daemon
 * (real microVMs); without it VM routes answer 503 and everything else is real.
 */
export async function startServer(opts: { engine: boolean; readyTimeoutMs?: number }): Promise<Server> {
  const dataDir = tempDir("cli-e2e-data-");
  const key = `skp_cli${Math.random().toString(36).slice(2)}${"x".repeat(24)}`.slice(0, 40);
  const proc: ChildProcess = spawn(
    process.execPath,
    [SERVER_MAIN, "serve", "--port", "0", "--data-dir", dataDir],
    {
      env: cleanEnv({
        // Where images are cached is the host's setting, not a credential: the server under test must
        // build into (and reuse) the same cache as the rest of the suite.
        ...(process.env.CREATEOS_SANDBOX_CACHE
          ? { CREATEOS_SANDBOX_CACHE: process.env.CREATEOS_SANDBOX_CACHE }
          : {}),
        CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: key,
        CREATEOS_SANDBOX_HOSTD: opts.engine ? "local" : "none",
        // Fixed default ports would collide between servers started side by side.
        CREATEOS_SANDBOX_INGRESS_LISTEN: "127.0.0.1:0",
        CREATEOS_SANDBOX_SSH_LISTEN: "127.0.0.1:0",
      }),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const logs: string[] = [];
  let partial = "";
  let onLine: ((l: string) => void) | undefined;
  const feed = (c: Buffer) => {
    partial += c.toString();
    for (let i = partial.indexOf("\n"); i !== -1; i = partial.indexOf("\n")) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      logs.push(line);
      onLine?.(line);
    }
  };
  proc.stdout?.on("data", feed);
  proc.stderr?.on("data", feed);
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`server did not start: ${logs.slice(-5).join("\n")}`)),
      30_000,
    );
    const check = (l: string) => {
      const m = /"msg":"listening".*"url":"([^"]+)"/.exec(l);
      if (m) {
        clearTimeout(t);
        resolve(m[1] as string);
      }
    };
    logs.forEach(check);
    onLine = check;
    void exited.then(() => reject(new Error(`server exited: ${logs.slice(-10).join("\n")}`)));
  });
  onLine = undefined;
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  if (opts.engine) {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 600_000);
    for (;;) {
      const r = await fetch(`${url}/readyz`).catch(() => undefined);
      if (r?.status === 200) break;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`server not ready: ${r ? await r.text() : "unreachable"}`);
      }
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
  return { url, key, dataDir, logs, stop };
}

export function hasTool(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * The terminal tests need tmux and ssh, which `npm test` installs (scripts/bootstrap.sh): a missing one is
 * a broken install step, so the suite fails at once instead of skipping the tests that need it.
 */
export function requireTools(...names: string[]): void {
  const missing = names.filter((n) => !hasTool(n));
  if (missing.length)
    throw new Error(
      `missing tools for the terminal tests: ${missing.join(", ")} (scripts/bootstrap.sh installs them)`,
    );
}

/** A real terminal: the command runs inside a detached tmux session of a fixed size. */
export class Tmux {
  readonly session: string;
  private readonly socket: string;
  constructor(command: string, env: Record<string, string>, size = { x: 120, y: 40 }) {
    this.session = `cli${process.pid}${Math.random().toString(36).slice(2, 8)}`;
    this.socket = path.join(os.tmpdir(), `${this.session}.sock`);
    const exports = Object.entries(env)
      .filter(
        ([k]) =>
          k === "HOME" || k === "PATH" || k.startsWith("CREATEOS_") || k === "NO_COLOR" || k === "TERM",
      )
      .map(([k, v]) => `export ${k}=${shellQuote(v)};`)
      .join(" ");
    // `; sleep` keeps the pane (and its last screen) around after the command exits.
    const script = `${exports} ${command}; echo "[exit $?]"; sleep 600`;
    this.tmux(["new-session", "-d", "-s", this.session, "-x", String(size.x), "-y", String(size.y), script]);
  }
  private tmux(args: string[]): string {
    return execFileSync("tmux", ["-S", this.socket, ...args], { encoding: "utf8" });
  }
  send(...keys: string[]): void {
    this.tmux(["send-keys", "-t", this.session, ...keys]);
  }
  /** Types text literally (no key-name interpretation). */
  type(text: string): void {
    this.tmux(["send-keys", "-t", this.session, "-l", text]);
  }
  resize(x: number, y: number): void {
    this.tmux(["resize-window", "-t", this.session, "-x", String(x), "-y", String(y)]);
  }
  screen(): string {
    return this.tmux(["capture-pane", "-p", "-t", this.session]);
  }
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.screen();
      if (re.test(s)) return s;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} on screen:\n${s}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  kill(): void {
    try {
      this.tmux(["kill-server"]);
    } catch {
      // already gone
    }
    fs.rmSync(this.socket, { force: true });
  }
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function tmuxCommand(args: string[]): string {
  return [process.execPath, BIN, ...args].map(shellQuote).join(" ");
}

export interface Running {
  stdout(): string;
  stderr(): string;
  waitFor(re: RegExp, stream?: "stdout" | "stderr", timeoutMs?: number): Promise<string>;
  signal(sig: NodeJS.Signals): void;
  exit: Promise<number>;
}

/** Starts a long-running `createos …` (tunnel, sync) in the background. */
export function spawnCli(args: string[], env: Record<string, string>): Running {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    err += c.toString();
  });
  const exit = new Promise<number>((resolve) =>
    child.once("exit", (code, sig) => resolve(code ?? (sig ? 128 : 1))),
  );
  return {
    stdout: () => out,
    stderr: () => err,
    async waitFor(re, stream = "stdout", timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = stream === "stdout" ? out : err;
        if (re.test(text)) return text;
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`waiting for ${re} on ${stream}; stdout: ${out}\nstderr: ${err}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    signal(sig) {
      if (child.exitCode === null) child.kill(sig);
    },
    exit,
  };
}
