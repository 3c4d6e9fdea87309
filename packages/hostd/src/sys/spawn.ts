/**
 * Programs that outlive the host daemon (QEMU). Not `run` (run.ts): a VMM runs for as long as its VM does.
 * QEMU no longer `-daemonize`s itself: its seccomp filter (`-sandbox …,spawn=deny`) forbids the fork that
 * would take, so its jailer is started here in a session of its own, detached, with its output going to a
 * log file rather than to pipes the daemon would have to keep reading (the next daemon re-adopts it by pid).
 */
import { spawn } from "node:child_process";
import { constants, closeSync, fstatSync, openSync } from "node:fs";
import { SysError, inNetns } from "./run.js";

export interface Detached {
  /** The program's pid. */
  pid: number;
  /** Settles when the program exits (the jailer: once the VMM is forked off, or when setting it up failed). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cmd` detached (own session, stdin /dev/null, stdout and stderr appended to `logPath`). */
export function spawnDetached(cmd: string, args: string[], opts: { logPath: string }): Promise<Detached> {
  // No `ip netns exec` wrapper: the jailer enters the VM's network namespace itself.
  // The log is in the VM dir, QEMU's to plant a link in: appended to only as a regular file of its own.
  const { O_WRONLY, O_APPEND, O_CREAT, O_NOFOLLOW, O_NONBLOCK } = constants;
  const refuse = () =>
    Promise.reject(new SysError([cmd, ...args], "", null, `${opts.logPath} is not a regular file: refused`));
  let log: number;
  try {
    log = openSync(opts.logPath, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o600);
  } catch (e) {
    // ELOOP: a link; ENXIO: a FIFO nobody reads
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP" || code === "ENXIO") return refuse();
    throw e;
  }
  if (!fstatSync(log).isFile()) {
    closeSync(log);
    return refuse();
  }
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", log, log], detached: true });
    closeSync(log);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.once("exit", (code, signal) => r({ code, signal })),
    );
    child.once("error", (err) => reject(new SysError([cmd, ...args], "", null, `${cmd}: ${err.message}`)));
    // Not unref'd: the launcher (the jailer) exits as soon as the VM is set up, and its exit is awaited.
    child.once("spawn", () => resolve({ pid: child.pid as number, exited }));
  });
}

/**
 * Starts a program that daemonizes itself and must outlive this process (dnsmasq): waits for the
 * launcher to exit (the parent exits once the daemon is set up, or with an error on stderr).
 */
export function spawnDaemon(
  cmd: string,
  args: string[],
  opts: { netns?: string; timeoutMs?: number } = {},
): Promise<void> {
  const [file, argv] = inNetns(cmd, args, opts.netns);
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
