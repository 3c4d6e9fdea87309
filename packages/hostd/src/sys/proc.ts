/** What /proc says about processes and the host: liveness, argv, memory, clock. */
import { readFileSync } from "node:fs";

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** argv of a live process, or undefined when it is gone. */
export function procCmdline(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    const parts = raw.split("\0");
    if (parts.at(-1) === "") parts.pop();
    return parts;
  } catch {
    return undefined;
  }
}

/** True while `pid` is a zombie or gone (a detached QEMU is reaped by this daemon or, after it, by init). */
export function procGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X";
  } catch {
    return true;
  }
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Proportional set size of a process, bytes (`/proc/<pid>/smaps_rollup`). */
export function pssBytes(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const m = /^Pss:\s+(\d+) kB/m.exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function memAvailableMib(): number {
  try {
    const text = readFileSync("/proc/meminfo", "utf8");
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
    return m ? Math.floor(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

export function hostTscKhz(): number {
  try {
    const t = readFileSync("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "utf8").trim();
    if (/^\d+$/.test(t)) return Number(t);
  } catch {
    // fall through to cpuinfo
  }
  try {
    const text = readFileSync("/proc/cpuinfo", "utf8");
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(text);
    if (m) return Math.round(Number(m[1]) * 1000);
  } catch {
    // unknown
  }
  return 2_000_000;
}
