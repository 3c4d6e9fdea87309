/**
 * Accelerator and vCPUs. KVM passes the host CPU through; TCG emulates `max` (every feature QEMU can
 * emulate) so software that checks CPU flags behaves as on real hardware, just slower.
 */
import type { Accel } from "@createos-sandbox/protocol";
import type { MachineConfig } from "../driver.js";

export function accelArgs(accel: Accel, tbSizeMib?: number): string[] {
  return accel === "kvm"
    ? ["-accel", "kvm", "-cpu", "host"]
    : // the translation-block cache is host RAM per VM: small by default, many VMs share a host
      ["-accel", `tcg,tb-size=${tbSizeMib ?? 32}`, "-cpu", "max"];
}

export function cpuArgs(c: MachineConfig): string[] {
  return [...accelArgs(c.accel, c.tbSizeMib), "-smp", String(c.vcpu)];
}
