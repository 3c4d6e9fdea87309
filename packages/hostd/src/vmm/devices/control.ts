/**
 * How the host daemon controls the QEMU process: QMP on a Unix socket (the next daemon re-adopts the VM
 * through it and the pidfile), and `-no-reboot` so a guest reboot ends the VM instead of restarting it
 * behind the daemon's back. No `-daemonize`: the fork it takes is what the seccomp filter (sandbox.ts)
 * denies. No `-pidfile`: inside its pid namespace QEMU is pid 1, so the jailer (vmm/jail.ts) writes the
 * pid the host sees.
 */
import type { MachinePaths } from "../driver.js";

export function controlArgs(p: MachinePaths): string[] {
  return ["-qmp", `unix:${p.qmp},server=on,wait=off`, "-no-reboot"];
}
