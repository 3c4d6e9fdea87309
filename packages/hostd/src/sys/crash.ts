/**
 * Fault injection for the crash tests: `CREATEOS_SANDBOX_CRASH_POINT=<name>` makes the process SIGKILL
 * itself the first time it reaches that point, exactly as a power cut or an OOM kill would stop it there.
 * Test-only (docs/server.md); unset, a crash point costs one environment lookup.
 */
export const CRASH_POINTS = [
  /** pause: device state saved and flushed, snapshot still marked pending. */
  "pause.after_state",
  /** pause: RAM file and disk renamed into the snapshot dir, snapshot not yet marked complete. */
  "pause.after_rename",
  /** pause: the host daemon answered, the control plane has not recorded the snapshot yet. */
  "pause.before_db",
  /** resume: the snapshot's files renamed into the VM dir, QEMU not restored yet. */
  "resume.after_rename",
  /** fork: the parent's files copied for the child, the child not restored yet. */
  "fork.after_copy",
  /** destroy: the VM gone, its snapshot and row not yet. */
  "destroy.mid",
] as const;

export type CrashPoint = (typeof CRASH_POINTS)[number];

export const CRASH_POINT_ENV = "CREATEOS_SANDBOX_CRASH_POINT";

export function crashPoint(name: CrashPoint): void {
  if (process.env[CRASH_POINT_ENV] !== name) return;
  process.kill(process.pid, "SIGKILL");
  // The signal is delivered before kill() returns; never run a step past the point meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}
