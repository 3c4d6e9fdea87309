/**
 * The NIC: a virtio-net device on the sandbox namespace's TAP (net/plan.ts). The MAC is the same in
 * every VM, like the guest address, so a restored or forked guest needs no reconfiguration.
 */
import type { MachineConfig } from "../driver.js";

export function netArgs(c: Pick<MachineConfig, "tap" | "mac">): string[] {
  if (!c.tap) return [];
  return [
    "-netdev",
    // script=no: the host daemon has set the TAP up already (net/index.ts), QEMU only opens it
    `tap,id=n0,ifname=${c.tap},script=no,downscript=no`,
    "-device",
    `virtio-net-device,netdev=n0,mac=${c.mac}`,
  ];
}
