/**
 * How the host daemon controls the QEMU process: QMP on a Unix socket, a pidfile (the next daemon
 * re-adopts the VM through pidfile and socket), and `-no-reboot` so a guest reboot ends the VM instead of
 * restarting it behind the daemon's back. No `-daemonize`: the fork it takes is what the seccomp filter
 * (jail.ts) denies, so sys/spawn.ts detaches QEMU instead.
 */
import type { MachinePaths } from "../driver.js";

export function controlArgs(p: MachinePaths): string[] {
  return ["-qmp", `unix:${p.qmp},server=on,wait=off`, "-pidfile", p.pidfile, "-no-reboot"];
}
