/**
 * Which accelerator this host can use, decided by a real boot: the kernel under KVM with an init that
 * does not exist. A working KVM prints the kernel's panic within a second or two; a PVM host (or no KVM)
 * hangs or fails, and VMs fall back to TCG.
 */
import { existsSync } from "node:fs";
import type { Accel } from "@createos-sandbox/protocol";
import { runRaw } from "../sys/index.js";
import { accelArgs } from "./devices/cpu.js";

const PROBE_INIT = "/createos-kvm-probe-no-such-init";
/** What the kernel says once it got as far as starting init: KVM ran it. */
const REACHED_INIT = /Kernel panic|Run \/createos-kvm-probe|No working init/;

export async function probeAccel(qemu: string, kernel: string): Promise<Accel> {
  if (!existsSync("/dev/kvm")) return "tcg";
  const args = [
    // no rtc, no devices: the probe needs nothing but the serial console
    ...["-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off"],
    ...accelArgs("kvm"),
    ...["-m", "128M", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot"],
    ...["-kernel", kernel, "-append", `console=ttyS0 acpi=off panic=-1 init=${PROBE_INIT}`],
    ...["-serial", "stdio"],
  ];
  const found = new AbortController();
  try {
    const r = await runRaw(qemu, args, {
      timeoutMs: 8000,
      signal: found.signal,
      onLine: (line) => {
        if (REACHED_INIT.test(line)) found.abort();
      },
    });
    return found.signal.aborted || REACHED_INIT.test(r.stdout) ? "kvm" : "tcg";
  } catch {
    return "tcg"; // QEMU could not be started
  }
}
