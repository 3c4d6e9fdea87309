export { type ImagesApi, LocalHostDaemon, type Logger, type OpenOptions } from "./daemon.js";
export type { Machine, MachineConfig, MachineState, VmmDriver } from "./vmm/driver.js";
export { QemuDriver, qemuArgs } from "./vmm/qemu.js";
export { QmpClient } from "./vmm/qmp.js";
export { slotAddrs, type SlotAddrs } from "./net/index.js";
