/**
 * Guest RAM as a `memory-backend-file,share=on` mapping of the VM's RAM file: the file *is* the guest's
 * memory, so a snapshot never copies RAM through the migration stream (with `x-ignore-shared` the stream
 * carries only device and vCPU state) and a restore maps the same file back.
 *
 * A fork maps its parent's frozen RAM file `share=off` instead (`ramShared: false`): a private
 * copy-on-write mapping, so the fork starts without a copy and only the pages it writes become its own.
 * Such a RAM block is not "shared" to QEMU, so its migration stream carries the RAM (snapshot/pause.ts).
 */
import type { MachineConfig } from "../driver.js";

export function memoryArgs(c: MachineConfig): string[] {
  return [
    "-m",
    `${c.memMib}M`,
    "-object",
    `memory-backend-file,id=mem,size=${c.memMib}M,mem-path=${c.ramPath},share=${c.ramShared === false ? "off" : "on"}`,
  ];
}
