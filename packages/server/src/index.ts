export { startServer, type RunningServer } from "./app.js";
export { loadConfig, type ServerConfig } from "./config.js";
export { createLogger, type Logger } from "./log.js";
export { SqliteStore } from "./store/sqlite.js";
export type { Store } from "./store/types.js";
