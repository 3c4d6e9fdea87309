/**
 * The root disk: the VM's writable top qcow2 layer over the shared image, as a virtio-blk device
 * (`/dev/vda` in the guest). Writeback caching: the guest's flushes still reach the host disk, and a
 * snapshot flushes it too; `discard=unmap` lets the guest's deletes free the overlay's clusters again.
 */
import type { MachineConfig } from "../driver.js";

/** The drive id QMP commands (`block_resize`) name the root disk by. */
export const ROOT_DRIVE = "root";

export function blockArgs(c: MachineConfig): string[] {
  return [
    "-drive",
    `file=${c.diskPath},format=qcow2,if=none,id=${ROOT_DRIVE},cache=writeback,discard=unmap,aio=threads`,
    "-device",
    `virtio-blk-device,drive=${ROOT_DRIVE}`,
  ];
}
