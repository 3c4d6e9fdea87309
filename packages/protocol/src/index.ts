export * from "./hostd.js";
export * as api from "./api.js";
export * from "./errors.js";
export * from "./agentwire.js";
