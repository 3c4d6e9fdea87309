import { readFileSync } from "node:fs";

/**
 * `cpu MHz` of the first CPU in /proc/cpuinfo × 1000: the TSC frequency guests are told on the kernel
 * command line, so they skip calibration (which hangs on microvm without HPET/PM timer).
 */
export function hostKhz(cpuinfo = readFileSync("/proc/cpuinfo", "utf8")): number {
  const m = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo);
  if (!m?.[1]) throw new Error("no 'cpu MHz' line in /proc/cpuinfo");
  return Math.round(Number.parseFloat(m[1]) * 1000);
}
