/**
 * Test harness: runs the real `createos-sandbox` program (dist/main.js) on a random port with a temp
 * data dir and talks to it over HTTP. Nothing is stubbed; without an engine the server runs with
 * CREATEOS_SANDBOX_HOSTD=none and VM routes answer 503.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { HostDaemon } from "@createos-sandbox/protocol";

export const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "main.js");
const pexec = promisify(execFile);

export interface ServerProc extends Logged {
  url: string;
  port: number;
  dataDir: string;
  adminKey: string;
}

/** A spawned program whose output lines are kept (and can be waited for). */
export interface Logged {
  proc: ChildProcess;
  logs: string[];
  exited: Promise<void>;
  waitLog(re: RegExp, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Runs `node main.js <args>` with `env`, collecting stdout and stderr lines. */
export function spawnLogged(args: string[], env: Record<string, string>): Logged {
  const proc = spawn(process.execPath, [MAIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  const logs: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  let partial = "";
  const onChunk = (c: Buffer) => {
    partial += c.toString();
    let i = partial.indexOf("\n");
    while (i !== -1) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      logs.push(line);
      // CSB_TEST_SERVER_LOG=<file> keeps every server line for a post-mortem.
      if (process.env.CSB_TEST_SERVER_LOG) appendFileSync(process.env.CSB_TEST_SERVER_LOG, `${line}\n`);
      for (const w of [...waiters]) {
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
      i = partial.indexOf("\n");
    }
  };
  proc.stdout!.on("data", onChunk);
  proc.stderr!.on("data", onChunk);
  const waitLog = (re: RegExp, timeoutMs = 20_000) => {
    const hit = logs.find((l) => re.test(l));
    if (hit) return Promise.resolve(hit);
    return new Promise<string>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`timeout waiting for log ${re}; last: ${logs.slice(-5).join("\n")}`)),
        timeoutMs,
      );
      waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  };
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      await exited;
    }
  };
  return { proc, logs, exited, waitLog, stop };
}

/** Waits for the log line matching `re`, failing early if the program exits first. */
export function waitStarted(p: Logged, re: RegExp): Promise<string> {
  return Promise.race([
    p.waitLog(re),
    p.exited.then(() => {
      throw new Error(`program exited: ${p.logs.join("\n")}`);
    }),
  ]);
}

/** The edge listeners on free ports: their fixed defaults would collide between servers run side by side. */
export const EPHEMERAL_EDGE = {
  CREATEOS_SANDBOX_INGRESS_LISTEN: "127.0.0.1:0",
  CREATEOS_SANDBOX_SSH_LISTEN: "127.0.0.1:0",
} as const;

export async function startProc(
  opts: {
    env?: Record<string, string>;
    dataDir?: string;
    engine?: boolean;
    adminKey?: string;
    /** More `serve` arguments, e.g. `--hostd <url>`. */
    args?: string[];
  } = {},
): Promise<ServerProc> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "csb-test-"));
  const adminKey =
    opts.adminKey ?? `skp_test${Math.random().toString(36).slice(2)}${"x".repeat(20)}`.slice(0, 36);
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: adminKey,
    CREATEOS_SANDBOX_HOSTD: opts.engine ? "local" : "none",
    ...EPHEMERAL_EDGE,
    ...opts.env,
  };
  const p = spawnLogged(["serve", "--port", "0", "--data-dir", dataDir, ...(opts.args ?? [])], env);
  const line = await waitStarted(p, /"msg":"listening"/);
  const port = Number(/"port":(\d+)/.exec(line)![1]);
  return { url: `http://127.0.0.1:${port}`, port, dataDir, adminKey, ...p };
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Runs the program as a CLI; returns stdout, stderr and the exit code. */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await pexec(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env } });
    return { stdout: r.stdout, stderr: r.stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number };
    return {
      stdout: err.stdout ?? "",
      stderr: err.stderr ?? "",
      code: typeof err.code === "number" ? err.code : 1,
    };
  }
}

export async function newUser(dataDir: string, name: string): Promise<string> {
  const r = await cli(["users", "create", name, "--data-dir", dataDir]);
  if (r.code !== 0) throw new Error(`users create failed: ${r.stderr}`);
  return r.stdout.trim().split("\n").at(-1)!;
}

export interface Res {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: tests inspect arbitrary JSON
  json: any;
  text: string;
}

export async function call(
  base: string,
  method: string,
  path: string,
  opts: { key?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key) headers["x-api-key"] = opts.key;
  let body: string | Buffer | undefined;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  } else if (opts.raw !== undefined) body = opts.raw;
  const r = await fetch(base + path, { method, headers, body });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, json, text };
}

export const ED25519 =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@example";

/**
 * Every per-sandbox REST route, as `[method, suffix after /v1/sandboxes/{id}, body?]`, each with a body
 * that passes validation: for an unknown or another tenant's sandbox the answer must be 404, never a
 * missing route or a validation error.
 */
export const SANDBOX_ROUTES: readonly (readonly [string, string, unknown?])[] = [
  ["GET", ""],
  ["PATCH", "", { ingress_enabled: true }],
  ["DELETE", ""],
  ["POST", "/pause"],
  ["POST", "/resume"],
  ["POST", "/fork", {}],
  ["POST", "/resize", { disk_mib: 20480 }],
  ["POST", "/exec", { cmd: "true" }],
  ["POST", "/exec?stream=true", { cmd: "true", stream: true }],
  ["GET", "/files?path=/etc/hostname"],
  ["PUT", "/files?path=/tmp/x"],
  ["GET", "/egress"],
  ["PUT", "/egress", { egress: ["example.com:443"] }],
  ["GET", "/bandwidth"],
  ["POST", "/bandwidth/recharge", { add_bytes: 1 }],
  ["POST", "/ssh-pubkeys", { keys: [ED25519] }],
  ["POST", "/access-token"],
  ["GET", "/access-token"],
  ["POST", "/access-token/rotate"],
  ["DELETE", "/access-token"],
  ["POST", "/networks", { id: "x" }],
  ["DELETE", "/networks/x"],
  ["GET", "/disks"],
];

/** Attaches a (scripted) host daemon to an in-process server and waits until the server counts it ready. */
export async function attachReady(
  srv: { attachHost(d: HostDaemon): Promise<unknown>; app: { hosts: { anyReady(): boolean } } },
  daemon: HostDaemon,
): Promise<void> {
  await srv.attachHost(daemon);
  for (let i = 0; !srv.app.hosts.anyReady(); i++) {
    if (i > 100) throw new Error("the scripted host never became ready");
    await new Promise((r) => setTimeout(r, 100));
  }
}
