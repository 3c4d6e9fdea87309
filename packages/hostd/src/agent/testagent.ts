/**
 * The real Go agent in --listen mode, for the client's tests (not named *.test.ts: it registers no
 * test). Each test file starts its own agent on a socket in a fresh temp dir.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { AgentClient, type AgentExecResult } from "./client.js";

const agentSrc = fileURLToPath(new URL("../../../agent", import.meta.url));

export interface RunOptions {
  env?: Record<string, string>;
  cwd?: string;
  stdin?: Buffer | Readable;
}

export interface TestAgent {
  /** The temp dir (the agent runs on this host: its files are here too). */
  tmp: string;
  sock: string;
  /** host:port of the agent's self-signal HTTP API; set once the agent is up. */
  selfAddr: string;
  /** The agent's process; set once it is up. */
  agent: ChildProcess;
  /** A client of the agent (connects on first use). */
  client: AgentClient;
  /** Runs argv through `client`, collecting stdout and stderr as strings. */
  run(argv: string[], opts?: RunOptions): Promise<AgentExecResult & { stdout: string; stderr: string }>;
}

/** Builds createos-agent from packages/agent into `dir` (Go's caches under ~/.cache); returns its path. */
export function buildAgent(dir: string): string {
  const out = join(dir, "createos-agent");
  const cache = join(homedir(), ".cache", "createos-sandbox", "go");
  execFileSync("go", ["build", "-trimpath", "-o", out, "./cmd/createos-agent"], {
    cwd: agentSrc,
    env: {
      ...process.env,
      CGO_ENABLED: "0",
      GOCACHE: join(cache, "build"),
      GOPATH: join(cache, "path"),
      GOFLAGS: "-mod=mod",
      GOTOOLCHAIN: "local",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return out;
}

/**
 * Registers before/after hooks that build the agent, start it listening in a fresh temp dir and
 * tear it down; returns what the tests use (agent and selfAddr are filled in by the before hook).
 */
export function useAgent(): TestAgent {
  const tmp = mkdtempSync(join(tmpdir(), "agent-client-test-"));
  const sock = join(tmp, "a.sock");
  const client = new AgentClient(sock, { readyTimeoutMs: 5000 });
  const t: TestAgent = {
    tmp,
    sock,
    selfAddr: "",
    agent: undefined as unknown as ChildProcess,
    client,
    run: (argv, opts = {}) => run(client, argv, opts),
  };
  before(async () => {
    const bin = buildAgent(tmp);
    const agent = spawn(bin, ["--listen", `unix:${sock}`, "--self-addr", "127.0.0.1:0"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    t.agent = agent;
    let stderr = "";
    t.selfAddr = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent did not start: ${stderr}`)), 10_000);
      agent.stderr!.on("data", (b: Buffer) => {
        stderr += b.toString();
        const m = /self-addr (\S+)/.exec(stderr);
        if (m && stderr.includes("listening")) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      agent.once("exit", (code) => reject(new Error(`agent exited ${code}: ${stderr}`)));
    });
  });
  after(() => {
    client.close();
    t.agent?.kill("SIGKILL");
    rmSync(tmp, { recursive: true, force: true });
  });
  return t;
}

/** The end of every file's tests: no channel left open, and the agent's memory for the log. */
export async function assertIdle(t: TestAgent): Promise<void> {
  assert.ok(existsSync(t.sock));
  // The agent sends a channel's EXIT before it drops the channel from its table, so a stats call
  // right after the last operation may still count it: ask again for up to a second.
  let open = -1;
  for (let i = 0; i < 50 && open !== 0; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 20));
    open = (await t.client.stats()).open_channels;
  }
  assert.equal(open, 0);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${t.agent.pid}/status`, "utf8"))?.[1]);
  console.log(`# agent RSS after the suite: ${(rss / 1024).toFixed(1)} MiB`);
}

async function run(client: AgentClient, argv: string[], opts: RunOptions) {
  let stdout = "";
  let stderr = "";
  const r = await client.exec(
    { argv, ...opts },
    {
      onStdout: (b) => {
        stdout += b.toString();
      },
      onStderr: (b) => {
        stderr += b.toString();
      },
    },
  );
  return { ...r, stdout, stderr };
}

export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}
