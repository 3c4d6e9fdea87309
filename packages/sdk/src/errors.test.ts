import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CreateosSandboxApiError,
  CreateosSandboxAuthError,
  CreateosSandboxError,
  CreateosSandboxNotFoundError,
  CreateosSandboxPaymentRequiredError,
  CreateosSandboxPermissionError,
  CreateosSandboxRateLimitError,
  CreateosSandboxServerError,
  CreateosSandboxValidationError,
  errorFromResponse,
  extractResourceId,
  parseRetryAfterSeconds,
} from "./errors.js";

const res = (status: number, headers: Record<string, string> = {}) => new Response(null, { status, headers });

test("status → class mapping", () => {
  const cases: [number, new (...a: never[]) => CreateosSandboxApiError][] = [
    [400, CreateosSandboxValidationError],
    [409, CreateosSandboxValidationError],
    [422, CreateosSandboxValidationError],
    [401, CreateosSandboxAuthError],
    [402, CreateosSandboxPaymentRequiredError],
    [403, CreateosSandboxPermissionError],
    [404, CreateosSandboxNotFoundError],
    [429, CreateosSandboxRateLimitError],
    [500, CreateosSandboxServerError],
    [503, CreateosSandboxServerError],
    [418, CreateosSandboxApiError],
  ];
  for (const [status, cls] of cases) {
    const err = errorFromResponse(res(status));
    assert.ok(err instanceof cls, `${status}`);
    assert.ok(err instanceof CreateosSandboxError);
    assert.equal(err.statusCode, status);
    assert.equal(err.name, cls.name);
  }
  assert.equal(errorFromResponse(res(418)).constructor, CreateosSandboxApiError);
});

test("JSend fail: string, field object (with code), null; error envelope", () => {
  const a = errorFromResponse(res(400), { status: "fail", data: "shape is required" });
  assert.equal(a.message, "createos-sandbox request failed (400): shape is required");
  const b = errorFromResponse(res(400), {
    status: "fail",
    data: { shape: "unknown shape: s-bad", code: "bad_shape" },
  });
  assert.equal(
    b.message,
    "createos-sandbox request failed (400): shape: unknown shape: s-bad, code: bad_shape",
  );
  assert.equal(b.code, "bad_shape");
  assert.deepEqual(b.envelope, {
    status: "fail",
    data: { shape: "unknown shape: s-bad", code: "bad_shape" },
  });
  const c = errorFromResponse(res(404), { status: "fail", data: null });
  assert.equal(c.message, "Not found (404).");
  assert.equal(c.code, undefined);
  const d = errorFromResponse(res(500), { status: "error", message: "internal error", code: 500 });
  assert.equal(d.message, "internal error");
  const e = errorFromResponse(res(502), "<html>bad gateway</html>");
  assert.equal(e.envelope, undefined);
  assert.equal(e.message, "createos-sandbox request failed with 502.");
});

test("request id, resource id, endpoint and method are recorded", () => {
  const err = errorFromResponse(res(404, { "x-request-id": "req-1" }), undefined, {
    endpoint: "/v1/sandboxes/sb-abc/exec",
    method: "POST",
  });
  assert.equal(err.requestId, "req-1");
  assert.equal(err.resourceId, "sb-abc");
  assert.equal(err.endpoint, "/v1/sandboxes/sb-abc/exec");
  assert.equal(err.method, "POST");
  assert.equal(errorFromResponse(res(500, { "x-fc-request-id": "fc-2" })).requestId, "fc-2");
  assert.equal(extractResourceId("/v1/templates/my%20tpl/logs"), "my tpl");
  assert.equal(extractResourceId("/v1/whoami"), undefined);
});

test("rate-limit errors carry Retry-After; credentials echoed by the server are redacted", () => {
  const err = errorFromResponse(res(429, { "retry-after": "7" }));
  assert.ok(err instanceof CreateosSandboxRateLimitError);
  assert.equal((err as CreateosSandboxRateLimitError).retryAfterSeconds, 7);
  const leak = errorFromResponse(res(401), {
    status: "fail",
    data: { auth: "invalid api key skp_abcdefSECRET123" },
  });
  assert.ok(!leak.message.includes("SECRET"), leak.message);
  assert.match(leak.message, /auth: invalid api key redacted/);
});

test("parseRetryAfterSeconds: delta-seconds, HTTP-date, garbage", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfterSeconds("3", now), 3);
  assert.equal(parseRetryAfterSeconds(" 0 ", now), 0);
  assert.equal(parseRetryAfterSeconds("1.5", now), 1.5);
  assert.equal(parseRetryAfterSeconds("Thu, 01 Jan 2026 00:00:10 GMT", now), 10);
  assert.equal(parseRetryAfterSeconds("Wed, 31 Dec 2025 00:00:00 GMT", now), 0);
  assert.equal(parseRetryAfterSeconds("-5", now), undefined);
  assert.equal(parseRetryAfterSeconds("soon", now), undefined);
  assert.equal(parseRetryAfterSeconds(null, now), undefined);
  assert.equal(parseRetryAfterSeconds("", now), undefined);
});
