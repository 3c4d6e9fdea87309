import { existsSync, readFileSync, statSync } from "node:fs";
import { copyFile, mkdir, readFile, rename } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { HostdError, type Progress } from "@createos-sandbox/protocol";
import { SingleFlight } from "../sys/fs.js";
import { NO_TIMEOUT, run, runSync } from "../sys/index.js";
import { cacheDir, recipesDir, rmrf, sha256, tempDirIn, withFileLock } from "./util.js";

const SOURCE_PACKAGE = "linux-source-6.1";
/** Bump when the build procedure below changes in a way that changes the output. */
const PROCEDURE = "x86_64 tinyconfig + fragment, make vmlinux, v1";
/**
 * Compile steps (`CC`/`AS`/`LD`/`AR` lines) of a full `make vmlinux` with the fragment, measured once;
 * only used to turn make's output into a progress fraction.
 */
const EXPECTED_STEPS = 1780;

export function kernelFragmentPath(): string {
  return join(recipesDir(), "kernel", "sandbox.config");
}

function sourceTarball(): string {
  return process.env.CREATEOS_SANDBOX_LINUX_SRC ?? `/usr/src/${SOURCE_PACKAGE}.tar.xz`;
}

let cachedSourceVersion: { key: string; version: string } | undefined;

/** The Debian package version of the kernel source, or the tarball's size+mtime when dpkg knows nothing. */
function sourceVersion(): string {
  const tarball = sourceTarball();
  let st: { size: number; mtimeMs: number } = { size: 0, mtimeMs: 0 };
  try {
    st = statSync(tarball);
  } catch {
    // missing: ensureKernel reports it; the hash still has to be computable
  }
  const key = `${tarball}:${st.size}:${st.mtimeMs}`;
  if (cachedSourceVersion?.key === key) return cachedSourceVersion.version;
  let version = `file ${key}`;
  if (!process.env.CREATEOS_SANDBOX_LINUX_SRC) {
    const r = runSync("dpkg-query", ["-W", "-f=${Version}", SOURCE_PACKAGE]);
    if (r.code === 0 && r.stdout.trim()) version = `${SOURCE_PACKAGE} ${r.stdout.trim()}`;
  }
  cachedSourceVersion = { key, version };
  return version;
}

/** Hash of the kernel recipe: config fragment + source package version (+ build procedure). */
export function kernelHash(): string {
  return sha256(readFileSync(kernelFragmentPath()), sourceVersion(), PROCEDURE);
}

export function kernelPath(hash = kernelHash()): string {
  return join(cacheDir(), "kernel", hash, "vmlinux");
}

/** Options from the fragment: `CONFIG_X=v` and `# CONFIG_X is not set` (as "n"). */
export function parseFragment(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set?.[1] && set[2] !== undefined) {
      m.set(set[1], set[2]);
      continue;
    }
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset?.[1]) m.set(unset[1], "n");
  }
  return m;
}

/** Fragment options that did not survive olddefconfig (Kconfig drops options with unmet dependencies). */
export function missingOptions(fragment: Map<string, string>, dotConfig: string): string[] {
  const final = parseFragment(dotConfig);
  const missing: string[] = [];
  for (const [k, want] of fragment) {
    const got = final.get(k) ?? "n";
    if (got !== want) missing.push(`${k} (wanted ${want}, got ${got})`);
  }
  return missing;
}

const flight = new SingleFlight<string>();

export function ensureKernel(onProgress?: (p: Progress) => void): Promise<string> {
  const hash = kernelHash();
  const out = kernelPath(hash);
  if (existsSync(out)) return Promise.resolve(out);
  const progress = onProgress ?? (() => {});
  return flight.do(hash, () =>
    withFileLock(
      // beside kernel/<hash>/, which must not exist until the finished dir is renamed there
      join(cacheDir(), "kernel", `${hash}.lock`),
      async () => (existsSync(out) ? out : buildKernel(hash, progress)),
      (pid) =>
        progress({ phase: "kernel:wait", message: `another process (pid ${pid}) is building this kernel` }),
    ),
  );
}

async function buildKernel(hash: string, progress: (p: Progress) => void): Promise<string> {
  const tarball = sourceTarball();
  if (!existsSync(tarball)) {
    throw new HostdError(
      "not_ready",
      `kernel source ${tarball} is missing: install the Debian package ${SOURCE_PACKAGE}`,
    );
  }
  const kernelRoot = join(cacheDir(), "kernel");
  const tmp = await tempDirIn(kernelRoot, hash);
  try {
    progress({ phase: "kernel:extract", message: `unpacking ${tarball}` });
    await run("tar", ["-xJf", tarball, "-C", tmp, "--no-same-owner"], { timeoutMs: NO_TIMEOUT });
    const src = join(tmp, SOURCE_PACKAGE);
    const env = {
      ...process.env,
      ARCH: "x86_64",
      // reproducible banner: the build host and time do not leak into the image id
      KBUILD_BUILD_USER: "createos",
      KBUILD_BUILD_HOST: "sandbox",
      KBUILD_BUILD_TIMESTAMP: "2023-01-01",
      LC_ALL: "C",
    };
    // the compile takes as long as it takes; with no timeout make stays in our process group (Ctrl-C)
    const inTree = { cwd: src, env, timeoutMs: NO_TIMEOUT };

    progress({ phase: "kernel:config", message: "tinyconfig + sandbox.config" });
    const fragmentPath = kernelFragmentPath();
    await run("make", ["ARCH=x86_64", "tinyconfig"], inTree);
    await run("scripts/kconfig/merge_config.sh", ["-m", ".config", fragmentPath], inTree);
    await run("make", ["ARCH=x86_64", "olddefconfig"], inTree);
    const fragment = parseFragment(await readFile(fragmentPath, "utf8"));
    const missing = missingOptions(fragment, await readFile(join(src, ".config"), "utf8"));
    if (missing.length > 0) {
      throw new Error(`kernel config options did not stick (unmet dependencies?): ${missing.join(", ")}`);
    }

    const jobs = String(Math.max(1, availableParallelism()));
    progress({ phase: "kernel:compile", fraction: 0, message: `make -j${jobs} vmlinux` });
    let steps = 0;
    let lastReported = 0;
    const final = join(kernelRoot, hash);
    // a process that does not take the lock (older code, another host on a shared cache) may finish the
    // same kernel first: then ours is wasted CPU, stop it
    const abort = new AbortController();
    const watch = setInterval(() => {
      if (existsSync(join(final, "vmlinux"))) abort.abort();
    }, 15_000);
    try {
      await run("nice", ["-n", "10", "make", "ARCH=x86_64", `-j${jobs}`, "vmlinux"], {
        ...inTree,
        signal: abort.signal,
        onLine: (line) => {
          if (!/^\s+(CC|AS|LD|AR)\s/.test(line)) return;
          steps++;
          const fraction = Math.min(0.99, steps / EXPECTED_STEPS);
          if (fraction - lastReported >= 0.02) {
            lastReported = fraction;
            progress({ phase: "kernel:compile", fraction, message: line.trim() });
          }
        },
      });
    } catch (e) {
      if (abort.signal.aborted) {
        progress({
          phase: "kernel:done",
          fraction: 1,
          message: `built meanwhile by another process: ${final}`,
        });
        return join(final, "vmlinux");
      }
      throw e;
    } finally {
      clearInterval(watch);
    }

    const outDir = join(tmp, "out");
    await mkdir(outDir);
    await copyFile(join(src, "vmlinux"), join(outDir, "vmlinux"));
    await copyFile(join(src, ".config"), join(outDir, "config"));
    try {
      await rename(outDir, final);
    } catch (e) {
      // another process finished the same build first: theirs is as good as ours
      if (!existsSync(join(final, "vmlinux"))) throw e;
    }
    progress({ phase: "kernel:done", fraction: 1, message: join(final, "vmlinux") });
    return join(final, "vmlinux");
  } finally {
    await rmrf(tmp);
  }
}
