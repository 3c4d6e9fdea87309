export * from "./hostd.js";
export { ExecOutput } from "./exec-output.js";
export * as api from "./api.js";
export * from "./errors.js";
export * from "./agentwire.js";
export * from "./hostd-wire.js";
export { RemoteHostDaemon, type RemoteOptions } from "./hostd-remote.js";
export { parseHostdUrl } from "./hostd-transport.js";
