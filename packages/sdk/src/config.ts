import { CreateosSandboxError } from "./errors.js";
import { runtimeTag } from "./runtime.js";
import type { ClientHooks, CreateosSandboxClientOptions, RetryOptions } from "./types.js";
import type { HeadersInit } from "./web-types.js";

/** Wire-compatibility version: the published SDK release whose behaviour this package reproduces. */
export const VERSION = "0.7.1";
export const DEFAULT_BASE_URL = "https://api.sb.createos.sh";
export const DEFAULT_TIMEOUT_MS = 60_000;
/** Wait budget of the `waitUntil*` pollers. */
export const DEFAULT_WAIT_MS = 120_000;
export const DEFAULT_RETRY: Required<RetryOptions> = Object.freeze({
  maxRetries: 2,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
});

export function mergeRetry(options: RetryOptions, fallback: Required<RetryOptions>): Required<RetryOptions> {
  return {
    maxRetries: options.maxRetries ?? fallback.maxRetries,
    baseDelayMs: options.baseDelayMs ?? fallback.baseDelayMs,
    maxDelayMs: options.maxDelayMs ?? fallback.maxDelayMs,
  };
}

export interface ResolvedConfig {
  apiKey: string | undefined;
  authHeaders: HeadersInit | undefined;
  baseUrl: string;
  fetch: typeof fetch;
  customFetch: boolean;
  defaultHeaders: HeadersInit;
  timeoutMs: number;
  retry: Required<RetryOptions> | false;
  userAgent: string;
  runtimeTag: string;
  hooks: ClientHooks | undefined;
}

export function readEnv(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.[name];
}

/**
 * Validates and normalises a control-plane base URL: http(s) only, no user-info (it would be sent
 * nowhere but could leak into logs), no query or fragment (silently dropped when paths resolve
 * against it), trailing slashes stripped.
 */
export function normalizeBaseUrl(raw: string): string {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new CreateosSandboxError(`baseUrl is not a valid URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new CreateosSandboxError(`baseUrl must use http or https, got ${parsed.protocol}`);
  }
  if (parsed.username || parsed.password) {
    throw new CreateosSandboxError("baseUrl must not contain user-info (credentials); pass apiKey instead.");
  }
  if (parsed.search || parsed.hash || raw.includes("?") || raw.includes("#")) {
    throw new CreateosSandboxError(`baseUrl must not contain a query string or fragment: ${parsed.origin}`);
  }
  return parsed.toString().replace(/\/+$/, "");
}

export function resolveConfig(options: CreateosSandboxClientOptions): ResolvedConfig {
  const customFetch = options.fetch !== undefined;
  // Bound so runtimes that check `this` on fetch do not throw "Illegal invocation".
  const fetchFn = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (typeof fetchFn !== "function") {
    throw new CreateosSandboxError("No fetch implementation available; pass `fetch` in the client options.");
  }
  // Blank values count as unset so the next source applies.
  const rawBase = options.baseUrl?.trim() || readEnv("CREATEOS_SANDBOX_BASE_URL")?.trim() || DEFAULT_BASE_URL;
  const baseUrl = normalizeBaseUrl(rawBase);

  let retry: Required<RetryOptions> | false;
  if (options.retry === false) retry = false;
  else if (options.retry) retry = mergeRetry(options.retry, DEFAULT_RETRY);
  else retry = { ...DEFAULT_RETRY };

  const apiKey = options.apiKey ?? (readEnv("CREATEOS_SANDBOX_API_KEY")?.trim() || undefined);
  if (apiKey && options.authHeaders) {
    throw new CreateosSandboxError("Pass either apiKey or authHeaders, not both.");
  }
  const tag = runtimeTag();
  return Object.freeze({
    apiKey,
    authHeaders: options.authHeaders,
    baseUrl,
    fetch: fetchFn,
    customFetch,
    defaultHeaders: options.headers ?? {},
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    retry,
    userAgent: options.userAgent ?? `createos-sandbox-sdk/${VERSION} ${tag}`,
    runtimeTag: tag,
    hooks: options.hooks,
  });
}
