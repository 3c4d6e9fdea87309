/**
 * The browser build (`@createos-sandbox/sdk/browser`): the REST surface over `fetch`. `shell()` and
 * `tunnel()` need raw TCP (node:net), which a page does not have: a bundler maps node:net and node:tls to
 * a stub (packages/console/vite.config.ts) and a browser opens the shell-ws WebSocket instead.
 */
export { CreateosSandboxClient, TemplatesApi, NetworksApi, DisksApi } from "./client.js";
export { Sandbox, SandboxFiles } from "./sandbox.js";
export { CreateosSandboxError, CreateosSandboxApiError, CreateosSandboxAuthError } from "./errors.js";
export type * from "./types.js";
