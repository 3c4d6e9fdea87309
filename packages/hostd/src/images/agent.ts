import { existsSync } from "node:fs";
import { mkdir, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { SingleFlight, writeFileAtomic } from "../sys/fs.js";
import { NO_TIMEOUT, run, which } from "../sys/index.js";
import { agentSourceDir, cacheDir, hashTree, rmrf, tempDirIn, withFileLock } from "./util.js";

/** The package inside the agent's Go module that builds the binary. */
const MAIN_PACKAGE = "./cmd/createos-agent";
export const AGENT_BINARY = "createos-agent";

/** Hash of every file under packages/agent (sorted paths + contents), build output (`bin/`) excluded. */
export function agentHash(srcDir = agentSourceDir()): string {
  return hashTree(srcDir, ["bin"]);
}

export function agentPath(hash = agentHash()): string {
  return join(cacheDir(), "agent", hash, AGENT_BINARY);
}

/** Go's caches under our cache dir: builds work as root in CI with no HOME and never touch ~/go. */
export function goEnv(): NodeJS.ProcessEnv {
  const goDir = join(cacheDir(), "go");
  return {
    ...process.env,
    CGO_ENABLED: "0",
    GOCACHE: join(goDir, "cache"),
    GOPATH: join(goDir, "path"),
    GOMODCACHE: join(goDir, "path", "pkg", "mod"),
    // standard library only: a module download would be a bug, fail instead of reaching the network
    GOPROXY: "off",
    GOFLAGS: "",
    GOTOOLCHAIN: "local",
  };
}

/**
 * Builds a static Go binary from `srcDir` (`pkg` inside it) into `outFile` atomically. Exposed so tests can
 * exercise the build path with a throwaway module.
 */
export async function goBuild(srcDir: string, pkg: string, outFile: string): Promise<void> {
  const go = which("go");
  if (!go) throw new HostdError("not_ready", "go is not installed (Debian package golang-go)");
  const tmp = `${outFile}.tmp-${process.pid}`;
  try {
    await run(go, ["build", "-trimpath", "-ldflags", "-s -w", "-o", tmp, pkg], {
      cwd: srcDir,
      env: goEnv(),
      timeoutMs: NO_TIMEOUT,
    });
    // go writes the binary in place; the copy makes its appearance at `outFile` atomic and durable
    await writeFileAtomic(outFile, await readFile(tmp), 0o755);
  } finally {
    await rmrf(tmp);
  }
}

const flight = new SingleFlight<string>();

/** Path of the static agent binary for the current sources, building it when missing. */
export function ensureAgent(onProgress?: (p: Progress) => void): Promise<string> {
  const src = agentSourceDir();
  if (!existsSync(join(src, "go.mod")) || !existsSync(join(src, MAIN_PACKAGE))) {
    return Promise.reject(
      new HostdError(
        "not_ready",
        `the guest agent sources are missing: no go.mod or ${MAIN_PACKAGE} in ${src}`,
      ),
    );
  }
  const hash = agentHash(src);
  const out = agentPath(hash);
  if (existsSync(out)) return Promise.resolve(out);
  // the lock sits beside agent/<hash>/, which must not exist until the finished dir is renamed there
  const lock = join(cacheDir(), "agent", `${hash}.lock`);
  return flight.do(hash, () => withFileLock(lock, () => buildAgent(src, hash, out, onProgress)));
}

async function buildAgent(
  src: string,
  hash: string,
  out: string,
  onProgress?: (p: Progress) => void,
): Promise<string> {
  if (existsSync(out)) return out;
  const progress = onProgress ?? (() => {});
  const root = join(cacheDir(), "agent");
  const tmp = await tempDirIn(root, hash);
  try {
    progress({ phase: "agent:compile", message: `go build ${MAIN_PACKAGE}` });
    await goBuild(src, MAIN_PACKAGE, join(tmp, AGENT_BINARY));
    const final = join(root, hash);
    await mkdir(root, { recursive: true });
    try {
      await rename(tmp, final);
    } catch (e) {
      if (!existsSync(join(final, AGENT_BINARY))) throw e;
    }
    progress({ phase: "agent:done", fraction: 1, message: out });
    return out;
  } finally {
    await rmrf(tmp);
  }
}
