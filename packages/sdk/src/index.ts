export { CreateosSandboxClient, createClient, TemplatesApi, NetworksApi, DisksApi } from "./client.js";
export { Sandbox, SandboxFiles } from "./sandbox.js";
export { selfPause, selfDelete } from "./self.js";
export { CreateosSandboxHttp, encodePath } from "./http.js";
export type { HttpRequestOptions, Query, QueryValue } from "./http.js";
export { VERSION, DEFAULT_BASE_URL, DEFAULT_RETRY, DEFAULT_WAIT_MS, normalizeBaseUrl } from "./config.js";
export type { ResolvedConfig } from "./config.js";
export {
  CreateosSandboxError,
  CreateosSandboxApiError,
  CreateosSandboxAuthError,
  CreateosSandboxPermissionError,
  CreateosSandboxNotFoundError,
  CreateosSandboxPaymentRequiredError,
  CreateosSandboxValidationError,
  CreateosSandboxRateLimitError,
  CreateosSandboxServerError,
  CreateosSandboxConnectionError,
  CreateosSandboxTimeoutError,
  errorFromResponse,
  parseRetryAfterSeconds,
} from "./errors.js";
export type { ErrorRequestContext } from "./errors.js";
export { detectRuntime, runtimeTag } from "./runtime.js";
export type { Runtime } from "./runtime.js";
export { pollUntil, sleep } from "./poll.js";
export type { PollOptions } from "./poll.js";
export {
  SENSITIVE_HEADER_NAMES,
  SENSITIVE_QUERY_PARAMS,
  redactHeaders,
  redactQuery,
  redactUrl,
  redactSecrets,
} from "./redact.js";
export { readNdjson, NdjsonParser } from "./ndjson.js";
export { encodeDataFrames, encodeResizeFrame } from "./shell.js";
export * from "./types.js";
