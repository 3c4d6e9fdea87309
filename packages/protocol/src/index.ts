export * from "./hostd.js";
export * as api from "./api.js";
