import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_RETRY } from "./config.js";
import {
  backoffDelay,
  isNonReplayableBody,
  isRetryableNetworkError,
  isRetryableStatus,
  retryDelayForStatus,
} from "./retry.js";

test("status policy: 429/503 for any method; 408/500/502/504 only for idempotent methods", () => {
  for (const m of ["GET", "head", "PUT", "DELETE", "POST", "PATCH"]) {
    assert.equal(isRetryableStatus(m, 429), true, m);
    assert.equal(isRetryableStatus(m, 503), true, m);
  }
  for (const s of [408, 500, 502, 504]) {
    for (const m of ["GET", "HEAD", "PUT", "DELETE"])
      assert.equal(isRetryableStatus(m, s), true, `${m} ${s}`);
    for (const m of ["POST", "PATCH"]) assert.equal(isRetryableStatus(m, s), false, `${m} ${s}`);
  }
  for (const s of [200, 400, 401, 404, 409, 501]) assert.equal(isRetryableStatus("GET", s), false, `${s}`);
});

test("network errors are retried only for idempotent methods", () => {
  assert.equal(isRetryableNetworkError("GET"), true);
  assert.equal(isRetryableNetworkError("delete"), true);
  assert.equal(isRetryableNetworkError("POST"), false);
  assert.equal(isRetryableNetworkError("PATCH"), false);
});

test("backoff: exponential with jitter, capped after jitter", () => {
  const policy = { ...DEFAULT_RETRY };
  assert.equal(
    backoffDelay(0, policy, () => 0),
    500,
  );
  assert.equal(
    backoffDelay(1, policy, () => 0),
    1000,
  );
  assert.equal(
    backoffDelay(1, policy, () => 0.5),
    1250,
  );
  assert.equal(
    backoffDelay(10, policy, () => 0.99),
    30_000,
  );
  const tight = { maxRetries: 2, baseDelayMs: 500, maxDelayMs: 600 };
  assert.equal(
    backoffDelay(0, tight, () => 0.9),
    600,
  );
});

test("Retry-After wins over backoff, capped at maxDelayMs", () => {
  assert.deepEqual(
    retryDelayForStatus(0, DEFAULT_RETRY, 2, () => 0),
    { delayMs: 2000, reason: "rate-limit" },
  );
  assert.deepEqual(
    retryDelayForStatus(0, DEFAULT_RETRY, 3600, () => 0),
    { delayMs: 30_000, reason: "rate-limit" },
  );
  assert.deepEqual(
    retryDelayForStatus(1, DEFAULT_RETRY, undefined, () => 0),
    { delayMs: 1000, reason: "status" },
  );
});

test("streams and async iterables are non-replayable bodies", () => {
  assert.equal(isNonReplayableBody(new ReadableStream()), true);
  assert.equal(
    isNonReplayableBody(
      (async function* () {
        yield new Uint8Array(1);
      })(),
    ),
    true,
  );
  assert.equal(isNonReplayableBody("text"), false);
  assert.equal(isNonReplayableBody(new Uint8Array(3)), false);
  assert.equal(isNonReplayableBody(new Blob(["x"])), false);
  assert.equal(isNonReplayableBody(undefined), false);
});
