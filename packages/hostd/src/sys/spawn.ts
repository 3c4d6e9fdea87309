/**
 * Programs that outlive the host daemon (QEMU). Not `run` (run.ts): a VMM runs for as long as its VM does.
 * QEMU no longer `-daemonize`s itself: its seccomp filter (`-sandbox …,spawn=deny`) forbids the fork that
 * would take, so it is started here in a session of its own, detached, with its output going to a log file
 * rather than to pipes the daemon would have to keep reading (the next daemon re-adopts it by pid).
 */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { SysError, inNetns } from "./run.js";

export interface Detached {
  /** The program's pid: every launcher in front of it (`ip netns exec`, `setpriv`) execs, never forks. */
  pid: number;
  /** Settles when the program exits while this daemon still runs (the launcher's failure, or the VM's end). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cmd` detached (own session, stdin /dev/null, stdout and stderr appended to `logPath`). */
export function spawnDetached(
  cmd: string,
  args: string[],
  opts: { netns?: string; logPath: string },
): Promise<Detached> {
  const [file, argv] = inNetns(cmd, args, opts.netns);
  const log = openSync(opts.logPath, "a", 0o600);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ["ignore", log, log], detached: true });
    closeSync(log);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.once("exit", (code, signal) => r({ code, signal })),
    );
    child.once("error", (err) => reject(new SysError([file, ...argv], "", null, `${file}: ${err.message}`)));
    child.once("spawn", () => {
      // The daemon may exit while the VM runs on; it must not wait for it.
      child.unref();
      resolve({ pid: child.pid as number, exited });
    });
  });
}
