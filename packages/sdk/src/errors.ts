/**
 * Error hierarchy (identical class names and status mapping to the published SDK):
 *
 *   CreateosSandboxError
 *   ├─ CreateosSandboxApiError               any non-2xx
 *   │  ├─ CreateosSandboxAuthError           401
 *   │  ├─ CreateosSandboxPermissionError     403
 *   │  ├─ CreateosSandboxNotFoundError       404
 *   │  ├─ CreateosSandboxValidationError     400 / 409 / 422
 *   │  ├─ CreateosSandboxPaymentRequiredError 402
 *   │  ├─ CreateosSandboxRateLimitError      429
 *   │  └─ CreateosSandboxServerError         5xx
 *   ├─ CreateosSandboxConnectionError        no response
 *   └─ CreateosSandboxTimeoutError           request or wait deadline
 */
import type { ErrorEnvelope, FailEnvelope } from "@createos-sandbox/protocol/api";
import { redactSecrets } from "./redact.js";

export class CreateosSandboxError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    // new.target names each subclass without a constructor per class.
    this.name = new.target.name;
  }
}

export interface ErrorRequestContext {
  /** Request pathname (no host, no query). */
  endpoint?: string | undefined;
  method?: string | undefined;
}

export class CreateosSandboxApiError extends CreateosSandboxError {
  readonly statusCode: number;
  readonly response: Response;
  readonly envelope: FailEnvelope | ErrorEnvelope | undefined;
  /** `X-Request-Id` (or `X-Fc-Request-Id`) of the failed response. */
  readonly requestId: string | undefined;
  /** Sandbox/template/network/disk id parsed from the request path. */
  readonly resourceId: string | undefined;
  /** Machine code from a fail envelope's `data.code`. */
  readonly code: string | undefined;
  readonly endpoint: string | undefined;
  readonly method: string | undefined;

  constructor(
    message: string,
    response: Response,
    envelope?: FailEnvelope | ErrorEnvelope,
    resourceId?: string,
    context?: ErrorRequestContext,
  ) {
    super(message);
    this.statusCode = response.status;
    this.response = response;
    this.envelope = envelope;
    this.requestId =
      response.headers.get("x-request-id") ?? response.headers.get("x-fc-request-id") ?? undefined;
    this.resourceId = resourceId;
    this.code = extractCode(envelope);
    this.endpoint = context?.endpoint;
    this.method = context?.method;
  }
}

export class CreateosSandboxAuthError extends CreateosSandboxApiError {}
export class CreateosSandboxPermissionError extends CreateosSandboxApiError {}
export class CreateosSandboxNotFoundError extends CreateosSandboxApiError {}
export class CreateosSandboxValidationError extends CreateosSandboxApiError {}
export class CreateosSandboxPaymentRequiredError extends CreateosSandboxApiError {}

export class CreateosSandboxRateLimitError extends CreateosSandboxApiError {
  /** Parsed `Retry-After`, in seconds. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    message: string,
    response: Response,
    envelope?: FailEnvelope | ErrorEnvelope,
    resourceId?: string,
    context?: ErrorRequestContext,
  ) {
    super(message, response, envelope, resourceId, context);
    this.retryAfterSeconds = parseRetryAfterSeconds(response.headers.get("retry-after"));
  }
}

export class CreateosSandboxServerError extends CreateosSandboxApiError {}
export class CreateosSandboxConnectionError extends CreateosSandboxError {}
export class CreateosSandboxTimeoutError extends CreateosSandboxError {}

function extractCode(envelope: FailEnvelope | ErrorEnvelope | undefined): string | undefined {
  if (envelope?.status !== "fail") return undefined;
  const data = envelope.data;
  if (data && typeof data === "object") {
    const code = (data as Record<string, unknown>).code;
    if (typeof code === "string" && code.length > 0) return code;
  }
  return undefined;
}

/** Delta-seconds or HTTP-date → seconds (≥ 0); undefined when absent or unparsable. */
export function parseRetryAfterSeconds(
  value: string | null | undefined,
  now: number = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.max(0, Number(trimmed));
  // Only an HTTP-date has letters; Date.parse would read "-5" as a year.
  const date = /[a-z]/i.test(trimmed) ? Date.parse(trimmed) : Number.NaN;
  if (Number.isFinite(date)) return Math.max(0, Math.round((date - now) / 1000));
  return undefined;
}

const RESOURCE_PATH_RE = /\/v1\/(?:sandboxes|templates|networks|disks)\/([^/?#]+)/;

export function extractResourceId(path: string | undefined): string | undefined {
  if (!path) return undefined;
  const m = RESOURCE_PATH_RE.exec(path);
  const raw = m?.[1];
  if (raw === undefined) return undefined;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** One-line human message from a JSend fail/error body (field messages joined), or a status default. */
export function buildErrorMessage(
  status: number,
  envelope: FailEnvelope | ErrorEnvelope | undefined,
): string {
  if (envelope?.status === "error" && typeof envelope.message === "string" && envelope.message) {
    return redactSecrets(envelope.message);
  }
  if (envelope?.status === "fail") {
    const data = envelope.data;
    if (typeof data === "string" && data) {
      return redactSecrets(`createos-sandbox request failed (${status}): ${data}`);
    }
    // data may be null on the wire even though the published type says otherwise.
    if (data && typeof data === "object") {
      const fields = Object.entries(data)
        .map(([key, value]) => `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
        .join(", ");
      if (fields) return redactSecrets(`createos-sandbox request failed (${status}): ${fields}`);
    }
  }
  switch (status) {
    case 401:
      return "Unauthorized (401): missing or invalid API key. Set CREATEOS_SANDBOX_API_KEY or pass apiKey.";
    case 402:
      return "Payment required (402): insufficient credit. Top up to continue.";
    case 403:
      return "Forbidden (403): the API key cannot access this resource.";
    case 404:
      return "Not found (404).";
    case 429:
      return "Rate limited (429): too many requests. Retry after the Retry-After delay.";
    case 503:
      return "Service unavailable (503): no host with capacity. Retry shortly.";
    default:
      return `createos-sandbox request failed with ${status}.`;
  }
}

function asErrorEnvelope(envelope: unknown): FailEnvelope | ErrorEnvelope | undefined {
  if (!envelope || typeof envelope !== "object") return undefined;
  const status = (envelope as { status?: unknown }).status;
  return status === "fail" || status === "error" ? (envelope as FailEnvelope | ErrorEnvelope) : undefined;
}

/** The right subclass for a non-2xx response; `envelope` is the parsed body when it was JSON. */
export function errorFromResponse(
  response: Response,
  envelope?: unknown,
  context?: ErrorRequestContext,
): CreateosSandboxApiError {
  const typed = asErrorEnvelope(envelope);
  const message = buildErrorMessage(response.status, typed);
  const resourceId = extractResourceId(context?.endpoint);
  const args = [message, response, typed, resourceId, context] as const;
  switch (response.status) {
    case 400:
    case 409:
    case 422:
      return new CreateosSandboxValidationError(...args);
    case 401:
      return new CreateosSandboxAuthError(...args);
    case 402:
      return new CreateosSandboxPaymentRequiredError(...args);
    case 403:
      return new CreateosSandboxPermissionError(...args);
    case 404:
      return new CreateosSandboxNotFoundError(...args);
    case 429:
      return new CreateosSandboxRateLimitError(...args);
    default:
      return response.status >= 500
        ? new CreateosSandboxServerError(...args)
        : new CreateosSandboxApiError(...args);
  }
}
