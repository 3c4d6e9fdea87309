/**
 * QEMU's own seccomp filter, installed before the guest runs: no obsolete system calls, no setuid/setgid
 * and friends (`elevateprivileges`), no fork/exec (`spawn`: nothing in QEMU may start a shell, which is why
 * migration goes over a socket, vmm/migration.ts), no scheduler/affinity changes (`resourcecontrol`).
 * Installing it also sets `no_new_privs` (`Seccomp: 2`, `NoNewPrivs: 1` in /proc/<pid>/status).
 */
export const SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

export function sandboxArgs(): string[] {
  return ["-sandbox", SANDBOX];
}
