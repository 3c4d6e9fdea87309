/**
 * Programs that outlive the host daemon (QEMU with `-daemonize`). Not `run` (run.ts): the launcher's exit is
 * what counts, while the daemon it leaves behind may hold the inherited pipes open indefinitely.
 */
import { spawn } from "node:child_process";
import { SysError, inNetns } from "./run.js";

/**
 * Starts a program that must outlive this process (QEMU with `-daemonize`): waits for the launcher to
 * exit (QEMU's parent exits once the VM is set up, or with an error on stderr).
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
