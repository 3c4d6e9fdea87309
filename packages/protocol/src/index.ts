export * from "./hostd.js";
