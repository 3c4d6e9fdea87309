/**
 * The retry policy of protocol.md §1.7 as pure functions, so the decisions can be tested without I/O:
 * idempotent methods (GET/HEAD/PUT/DELETE) are retried on network errors and 408/500/502/503/504;
 * any method on 429/503 (the server promises it did not act); streams and one-shot bodies never.
 */
import type { RetryOptions } from "./types.js";

const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE"]);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method.toUpperCase());
}

export function isRetryableStatus(method: string, status: number): boolean {
  if (status === 429 || status === 503) return true;
  return isIdempotent(method) && (status === 408 || status === 500 || status === 502 || status === 504);
}

export function isRetryableNetworkError(method: string): boolean {
  return isIdempotent(method);
}

/** Exponential backoff with up to one base of jitter, capped after jitter so the cap holds. */
export function backoffDelay(
  attempt: number,
  retry: Required<RetryOptions>,
  random: () => number = Math.random,
): number {
  const raw = retry.baseDelayMs * 2 ** attempt + random() * retry.baseDelayMs;
  return Math.min(raw, retry.maxDelayMs);
}

/**
 * Delay before retrying after a retryable status: the server's Retry-After when given (capped at
 * `maxDelayMs`, so a hostile or mistaken header cannot park the caller for hours), else backoff.
 */
export function retryDelayForStatus(
  attempt: number,
  retry: Required<RetryOptions>,
  retryAfterSeconds: number | undefined,
  random: () => number = Math.random,
): { delayMs: number; reason: "rate-limit" | "status" } {
  if (retryAfterSeconds !== undefined) {
    return { delayMs: Math.min(retryAfterSeconds * 1000, retry.maxDelayMs), reason: "rate-limit" };
  }
  return { delayMs: backoffDelay(attempt, retry, random), reason: "status" };
}

/** True when a request body can be sent only once (streams, async iterables). */
export function isNonReplayableBody(body: unknown): boolean {
  if (body === null || body === undefined) return false;
  if (typeof ReadableStream !== "undefined" && body instanceof ReadableStream) return true;
  if (typeof body === "object" && Symbol.asyncIterator in body) return true;
  return false;
}
