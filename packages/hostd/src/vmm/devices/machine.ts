/**
 * The machine type and how it boots. `microvm` is QEMU's minimal board: no PCI, no firmware, virtio-mmio
 * devices only, the kernel loaded directly; what makes a cold boot take milliseconds, not seconds.
 */
import type { MachineConfig } from "../driver.js";

// PIT and PIC stay on: measured here, pit=off hung 1 boot in 2 and pic=off hung every boot that
// configures eth0 from the kernel command line (both stop right after "sched_clock: Marking stable").
// rtc on so the guest has a wall clock at boot, before the agent's configure sets it precisely.
// acpi=off: only then does QEMU append the virtio_mmio.device= entries the kernel (no ACPI) needs.
export const MICROVM = "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off";

/** Board, and nothing QEMU would add on its own (`-nodefaults`): every device below is one we asked for. */
export function machineArgs(c: MachineConfig): string[] {
  return [
    "-name",
    "createos,debug-threads=off",
    "-M",
    // guest RAM is the `mem` backend of memory.ts, so it can be a shared file
    `${c.machine ?? MICROVM},memory-backend=mem`,
    "-nodefaults",
    "-no-user-config",
    "-nographic",
  ];
}

/** Direct kernel boot: no bootloader, no firmware; the command line carries root, init and the address. */
export function bootArgs(c: MachineConfig): string[] {
  return ["-kernel", c.kernel, "-append", c.cmdline];
}
