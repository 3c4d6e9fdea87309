import { HostdError } from "@createos-sandbox/protocol";
import { guestIpParam } from "../net/plan.js";
import { AGENT_GUEST_PATH } from "./rootfs.js";

export interface CmdlineOptions {
  /** Host TSC frequency, kHz (`cpu MHz` in /proc/cpuinfo × 1000). */
  hostKhz: number;
  /**
   * Replace the agent as PID 1 (tests, debugging). There is deliberately no way to pass init arguments:
   * they would follow `--`, and QEMU's microvm appends its `virtio_mmio.device=` entries at the very end
   * of the command line, where the kernel would then hand them to init instead of probing the devices.
   */
  init?: string;
  /** Drop `quiet` to see the kernel's boot messages on the console. */
  verbose?: boolean;
  /**
   * Static guest address via the kernel's `ip=`. Default true. Without a NIC, `ip=…:eth0` makes the
   * kernel wait 12 s for eth0 to appear, so VMs booted without a network device must pass false.
   */
  network?: boolean;
}

/**
 * The base kernel command line every guest boots with. QEMU must run the microvm machine with
 * `acpi=off` (`-M microvm,acpi=off,…`): only then does it append the `virtio_mmio.device=` entries the
 * kernel needs to find its disk, NIC and console ports (this kernel has no ACPI).
 */
export function kernelCmdline(opts: CmdlineOptions): string {
  const khz = Math.round(opts.hostKhz);
  if (!Number.isFinite(khz) || khz <= 0) throw new HostdError("bad_request", `bad host kHz ${opts.hostKhz}`);
  const parts = [
    "console=ttyS0",
    // microvm + custom kernel: with ACPI on, QEMU leaves the virtio_mmio.device= entries out
    "acpi=off",
    "reboot=t",
    "panic=-1",
    // microvm has no HPET/PM timer: without these the guest sometimes hangs calibrating the TSC
    `tsc_early_khz=${khz}`,
    "tsc=reliable",
    `lpj=${khz * 4}`,
    "no_timer_check",
    "root=/dev/vda",
    "rootfstype=ext4",
    "rw",
    `init=${opts.init ?? AGENT_GUEST_PATH}`,
    // the VM is the isolation boundary; guest-internal Spectre/Meltdown mitigations (KPTI above all)
    // cost a lot under TCG and protect nothing the sandbox promises
    "mitigations=off",
    "random.trust_cpu=on",
    "8250.nr_uarts=1",
  ];
  if (!opts.verbose) parts.push("quiet");
  if (opts.network !== false) parts.push(guestIpParam());
  return parts.join(" ");
}
