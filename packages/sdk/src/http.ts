import type net from "node:net";
import { DEFAULT_RETRY, type ResolvedConfig, mergeRetry } from "./config.js";
import {
  CreateosSandboxConnectionError,
  CreateosSandboxError,
  CreateosSandboxTimeoutError,
  errorFromResponse,
  parseRetryAfterSeconds,
} from "./errors.js";
import { readNdjson } from "./ndjson.js";
import { paginate } from "./pagination.js";
import { sleep } from "./poll.js";
import { SENSITIVE_HEADER_NAMES, redactHeaders, redactSecrets, redactUrl } from "./redact.js";
import {
  backoffDelay,
  isNonReplayableBody,
  isRetryableNetworkError,
  isRetryableStatus,
  retryDelayForStatus,
} from "./retry.js";
import type { ClientHooks, RetryOptions, UpgradeOptions } from "./types.js";
import { openUpgrade } from "./upgrade.js";
/**
 * Transport: URL building (never leaving the configured origin), auth headers, JSend unwrapping,
 * retries (retry.ts), timeouts, AbortSignal composition, NDJSON streams and upgraded sockets.
 */
import type { BodyInit, HeadersInit } from "./web-types.js";

export type QueryValue = string | number | boolean | null | undefined;
export type Query = Record<string, QueryValue>;

export interface HttpRequestOptions {
  signal?: AbortSignal | undefined;
  headers?: HeadersInit | undefined;
  timeoutMs?: number | undefined;
  retry?: RetryOptions | false | undefined;
  query?: Query | undefined;
  /** JSON body (serialised with JSON.stringify). */
  body?: unknown;
  /** Raw body sent as-is (file uploads). Streams are never retried. */
  rawBody?: BodyInit | undefined;
  contentType?: string | undefined;
  /** false: send no credentials (health and catalog routes). */
  auth?: boolean | undefined;
}

interface Prepared {
  url: string;
  path: string;
  method: string;
  headers: Headers;
  body: BodyInit | undefined;
  hookMeta: { url: string; method: string; headers: Record<string, string> } | undefined;
}

export function encodePath(value: string): string {
  return encodeURIComponent(value);
}

export class CreateosSandboxHttp {
  readonly baseUrl: string;
  readonly #config: ResolvedConfig;
  readonly #origin: string;

  constructor(config: ResolvedConfig) {
    this.#config = config;
    this.baseUrl = config.baseUrl;
    this.#origin = new URL(config.baseUrl).origin;
  }

  /** Request + JSend unwrap; throws the typed error on non-2xx. */
  async request<T>(method: string, path: string, options: HttpRequestOptions = {}): Promise<T> {
    const response = await this.requestRaw(method, path, options);
    if (!response.ok) await this.throwForResponse(response, method, path);
    return unwrapJSend<T>(response);
  }

  async fetchAllPages<T>(
    method: string,
    path: string,
    options: HttpRequestOptions = {},
    page: { legacyKey?: string; cap?: number } = {},
  ): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this.iteratePages<T>(method, path, options, page)) all.push(item);
    return all;
  }

  iteratePages<T>(
    method: string,
    path: string,
    options: HttpRequestOptions = {},
    page: { legacyKey?: string; cap?: number } = {},
  ): AsyncGenerator<T> {
    const baseQuery = options.query ?? {};
    return paginate<T>(
      (limit, offset) =>
        this.request<unknown>(method, path, { ...options, query: { ...baseQuery, limit, offset } }),
      { legacyKey: page.legacyKey, cap: page.cap, path },
    );
  }

  /** Request with retries; returns the Response whatever its status (transport failures throw). */
  async requestRaw(method: string, path: string, options: HttpRequestOptions = {}): Promise<Response> {
    const prepared = this.#prepare(method, path, options);
    const retry = isNonReplayableBody(options.rawBody) ? false : this.#resolveRetry(options.retry);
    const maxRetries = retry ? retry.maxRetries : 0;
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      const start = performance.now();
      try {
        await this.#fire("onRequest", prepared, { attempt: attempt + 1 });
        response = await this.#dispatch(prepared, options);
      } catch (err) {
        if (
          retry &&
          attempt < maxRetries &&
          err instanceof CreateosSandboxConnectionError &&
          isRetryableNetworkError(prepared.method)
        ) {
          const delayMs = backoffDelay(attempt, retry);
          await this.#fire("onRetry", prepared, {
            attempt: attempt + 1,
            durationMs: performance.now() - start,
            reason: "network",
            delayMs,
          });
          // An abort during the sleep surfaces from the next dispatch as fetch's AbortError.
          await sleep(delayMs, options.signal);
          continue;
        }
        throw err;
      }
      const requestId = requestIdOf(response);
      await this.#fire("onResponse", prepared, {
        attempt: attempt + 1,
        status: response.status,
        durationMs: performance.now() - start,
        requestId,
      });
      if (
        response.ok ||
        !retry ||
        attempt >= maxRetries ||
        !isRetryableStatus(prepared.method, response.status)
      ) {
        return response;
      }
      const { delayMs, reason } = retryDelayForStatus(
        attempt,
        retry,
        parseRetryAfterSeconds(response.headers.get("retry-after")),
      );
      await this.#fire("onRetry", prepared, {
        attempt: attempt + 1,
        status: response.status,
        durationMs: performance.now() - start,
        requestId,
        reason,
        delayMs,
      });
      // Drain so the keep-alive socket can be reused.
      await response.arrayBuffer().catch(() => undefined);
      await sleep(delayMs, options.signal);
    }
  }

  /**
   * NDJSON stream; never retried (the server may already be running the command). Aborting
   * `signal` or leaving the loop early closes the connection.
   */
  async *stream<T>(method: string, path: string, options: HttpRequestOptions = {}): AsyncGenerator<T> {
    const prepared = this.#prepare(method, path, options);
    if (!prepared.headers.has("accept")) prepared.headers.set("Accept", "application/x-ndjson");
    await this.#fire("onRequest", prepared, { attempt: 1 });
    const start = performance.now();
    const response = await this.#dispatch(prepared, options);
    await this.#fire("onResponse", prepared, {
      attempt: 1,
      status: response.status,
      durationMs: performance.now() - start,
      requestId: requestIdOf(response),
    });
    if (!response.ok) await this.throwForResponse(response, prepared.method, prepared.path);
    if (!response.body) throw new CreateosSandboxError("The control plane returned an empty stream.");
    yield* readNdjson<T>(response.body);
  }

  /** Reads a non-2xx response (JSON bodies only) and throws the typed error. */
  async throwForResponse(response: Response, method: string, requestPath?: string): Promise<never> {
    let envelope: unknown;
    if ((response.headers.get("content-type") ?? "").includes("json")) {
      try {
        envelope = await response.json();
      } catch {
        envelope = undefined;
      }
    } else {
      await response.body?.cancel().catch(() => undefined);
    }
    let endpoint = requestPath?.split("?")[0];
    if (endpoint === undefined && response.url) {
      try {
        endpoint = new URL(response.url).pathname;
      } catch {
        endpoint = undefined;
      }
    }
    throw errorFromResponse(response, envelope, { endpoint, method: method.toUpperCase() });
  }

  /**
   * Opens an `Upgrade: tcp-tunnel` connection to `path` (addition over the published SDK).
   * Resolves with the raw socket after `101`; the caller owns it (attach an `error` listener).
   */
  async upgrade(path: string, options: UpgradeOptions = {}): Promise<net.Socket> {
    const url = new URL(this.#buildUrl(path, undefined));
    const headers = this.#buildHeaders({ headers: options.headers });
    return openUpgrade({
      url,
      headers,
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? this.#config.timeoutMs,
    });
  }

  #prepare(method: string, path: string, options: HttpRequestOptions): Prepared {
    const httpMethod = method.toUpperCase();
    const headers = this.#buildHeaders(options);
    let body: BodyInit | undefined;
    if (options.rawBody !== undefined) {
      if (options.contentType) headers.set("Content-Type", options.contentType);
      body = options.rawBody;
    } else if (options.body !== undefined) {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(options.body);
    }
    const url = this.#buildUrl(path, options.query);
    const hookMeta = this.#config.hooks
      ? { url: redactUrl(url), method: httpMethod, headers: redactHeaders(headers) }
      : undefined;
    return { url, path, method: httpMethod, headers, body, hookMeta };
  }

  async #fire(
    name: keyof ClientHooks,
    prepared: Prepared,
    extra: Record<string, unknown> & { attempt: number },
  ): Promise<void> {
    const hook = this.#config.hooks?.[name] as ((ctx: unknown) => void | Promise<void>) | undefined;
    if (!hook || !prepared.hookMeta) return;
    try {
      await hook({ ...prepared.hookMeta, ...extra });
    } catch (err) {
      // An observer must never break a real request.
      console.warn("createos-sandbox-sdk: client hook threw, ignoring", err);
    }
  }

  async #dispatch(prepared: Prepared, options: HttpRequestOptions): Promise<Response> {
    const timeoutMs = options.timeoutMs ?? this.#config.timeoutMs;
    const init: RequestInit & { duplex?: "half" } = { method: prepared.method, headers: prepared.headers };
    if (prepared.body !== undefined) {
      init.body = prepared.body;
      // undici refuses a streaming body without it.
      if (isNonReplayableBody(prepared.body)) init.duplex = "half";
    }
    const signals: AbortSignal[] = [];
    if (options.signal) signals.push(options.signal);
    const timeout = timeoutMs > 0 ? new AbortController() : undefined;
    const timer = timeout ? setTimeout(() => timeout.abort(), timeoutMs) : undefined;
    if (timeout) signals.push(timeout.signal);
    if (signals.length === 1) init.signal = signals[0] as AbortSignal;
    else if (signals.length > 1) init.signal = AbortSignal.any(signals);
    try {
      return await this.#config.fetch(prepared.url, init);
    } catch (err) {
      if (timeout?.signal.aborted && !options.signal?.aborted) {
        throw new CreateosSandboxTimeoutError(
          `Request timed out after ${timeoutMs}ms: ${prepared.method} ${prepared.path}`,
          { cause: err },
        );
      }
      // The caller's own abort propagates unchanged (AbortError), as with fetch.
      if (options.signal?.aborted) throw err;
      throw new CreateosSandboxConnectionError(
        redactSecrets(`Network error: ${prepared.method} ${prepared.path}`, [this.#config.apiKey]),
        { cause: err },
      );
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  #buildHeaders(options: { headers?: HeadersInit | undefined; auth?: boolean | undefined }): Headers {
    const headers = new Headers(this.#config.defaultHeaders);
    if (options.headers) new Headers(options.headers).forEach((v, k) => headers.set(k, v));
    if (!headers.has("user-agent")) headers.set("User-Agent", this.#config.userAgent);
    if (!headers.has("x-fc-runtime")) headers.set("X-Fc-Runtime", this.#config.runtimeTag);
    // Credentials only ever come from apiKey/authHeaders: the server resolves X-Auth-Token,
    // X-Access-Token and Authorization before X-Api-Key, so a stray one in generic headers would
    // silently change identity — and auth:false must send none at all.
    for (const name of SENSITIVE_HEADER_NAMES) headers.delete(name);
    if (options.auth === false) return headers;
    if (this.#config.authHeaders) {
      new Headers(this.#config.authHeaders).forEach((v, k) => headers.set(k, v));
    } else if (this.#config.apiKey) {
      headers.set("X-Api-Key", this.#config.apiKey);
    } else {
      throw new CreateosSandboxError(
        "Authentication is required. Pass apiKey, set CREATEOS_SANDBOX_API_KEY, or pass authHeaders.",
      );
    }
    return headers;
  }

  #buildUrl(path: string, query: Query | undefined): string {
    const url = new URL(path.replace(/^\/+/, ""), `${this.baseUrl}/`);
    // An absolute or protocol-relative "path" would carry our credentials to another host.
    if (url.origin !== this.#origin) {
      throw new CreateosSandboxError(`Refusing to send a request to a non-base origin: ${url.origin}`);
    }
    if (query) {
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
      }
    }
    return url.toString();
  }

  #resolveRetry(perRequest: RetryOptions | false | undefined): Required<RetryOptions> | false {
    if (perRequest === false) return false;
    const base = this.#config.retry;
    if (!perRequest) return base;
    return mergeRetry(perRequest, base || DEFAULT_RETRY);
  }
}

function requestIdOf(response: Response): string | undefined {
  return response.headers.get("x-request-id") ?? response.headers.get("x-fc-request-id") ?? undefined;
}

async function unwrapJSend<T>(response: Response): Promise<T> {
  const text = await response.text();
  if (!text) {
    // Only an explicit no-content status may have an empty body; anything else is a broken contract.
    if (response.status === 204 || response.status === 205) return undefined as T;
    throw new CreateosSandboxError(
      `The control plane returned an empty body with status ${response.status}; expected a JSend envelope.`,
    );
  }
  let envelope: { status?: unknown; data?: unknown };
  try {
    envelope = JSON.parse(text) as { status?: unknown; data?: unknown };
  } catch {
    throw new CreateosSandboxError(
      `Expected a JSON response from the control plane, got: ${redactSecrets(text.slice(0, 200))}`,
    );
  }
  if (envelope && envelope.status === "success") return envelope.data as T;
  throw new CreateosSandboxError(
    `The control plane returned a non-success envelope (status="${String(envelope?.status)}").`,
  );
}
