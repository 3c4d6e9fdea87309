/**
 * How the host daemon controls the QEMU process: QMP on a Unix socket, a pidfile, `-daemonize` so the VM
 * outlives the daemon (the next one re-adopts it through pidfile and socket), and `-no-reboot` so a
 * guest reboot ends the VM instead of restarting it behind the daemon's back.
 */
import type { MachinePaths } from "../driver.js";

export function controlArgs(p: MachinePaths): string[] {
  return ["-qmp", `unix:${p.qmp},server=on,wait=off`, "-pidfile", p.pidfile, "-daemonize", "-no-reboot"];
}
