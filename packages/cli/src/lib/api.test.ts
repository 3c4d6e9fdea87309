import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CliError, UsageError } from "../framework/errors.js";
import { describeError, isSandboxId, pickByName } from "./api.js";

type V = { name?: string; created_at: string; status: "running" | "destroyed" | "paused" };
const box = (id: string, data: V) => ({ id, data });

describe("name resolution", () => {
  it("treats sb- and sb_ prefixes as ids", () => {
    assert.equal(isSandboxId("sb-01k0000000000000000000000"), true);
    assert.equal(isSandboxId("sb_01K"), true);
    assert.equal(isSandboxId("my-box"), false);
    assert.equal(isSandboxId("sbox"), false);
  });

  it("picks the newest exact, case-sensitive match", () => {
    const items = [
      box("a", { name: "web", created_at: "2026-01-01T00:00:00Z", status: "paused" }),
      box("b", { name: "web", created_at: "2026-02-01T00:00:00Z", status: "running" }),
      box("c", { name: "Web", created_at: "2026-03-01T00:00:00Z", status: "running" }),
      box("d", { name: "web-2", created_at: "2026-04-01T00:00:00Z", status: "running" }),
    ];
    assert.equal(pickByName(items, "web")?.id, "b");
    assert.equal(pickByName(items, "Web")?.id, "c");
    assert.equal(pickByName(items, "we"), undefined);
  });

  it("prefers a live sandbox over a newer destroyed one with the same name", () => {
    const items = [
      box("old", { name: "ci", created_at: "2026-01-01T00:00:00Z", status: "running" }),
      box("gone", { name: "ci", created_at: "2026-05-01T00:00:00Z", status: "destroyed" }),
    ];
    assert.equal(pickByName(items, "ci")?.id, "old");
    assert.equal(pickByName([items[1] as (typeof items)[number]], "ci")?.id, "gone");
  });
});

describe("describeError", () => {
  const apiErr = (statusCode: number, envelope: unknown, message = "HTTP error") =>
    Object.assign(new Error(message), { statusCode, envelope });

  it("maps statuses to the documented codes and joins fail data", () => {
    const d = describeError(apiErr(400, { status: "fail", data: { shape: "unknown shape: s-bad" } }));
    assert.deepEqual(d, { code: "bad_request", message: "unknown shape: s-bad", exitCode: 1 });
    assert.equal(describeError(apiErr(404, { status: "fail", data: "sandbox not found" })).code, "not_found");
    assert.equal(describeError(apiErr(409, undefined)).code, "conflict");
    assert.equal(describeError(apiErr(429, undefined)).code, "rate_limited");
    assert.equal(describeError(apiErr(403, undefined)).code, "forbidden");
    const s = describeError(apiErr(503, { status: "error", message: "no capacity", code: 503 }));
    assert.equal(s.code, "server_error");
    assert.match(s.message, /no capacity/);
  });

  it("says what to do on 401", () => {
    const d = describeError(apiErr(401, { status: "fail", data: { auth: "invalid api key" } }));
    assert.equal(d.code, "unauthorized");
    assert.match(d.message, /invalid api key.*createos login/);
  });

  it("keeps CLI errors and their exit codes", () => {
    assert.deepEqual(describeError(new UsageError("bad flag")), {
      code: "usage_error",
      message: "bad flag",
      exitCode: 2,
    });
    assert.deepEqual(describeError(new CliError('not found: sandbox "x"', "not_found")), {
      code: "not_found",
      message: 'not found: sandbox "x"',
      exitCode: 1,
    });
  });

  it("names the server when it cannot be reached", () => {
    class CreateosSandboxConnectionError extends Error {}
    const d = describeError(new CreateosSandboxConnectionError("connect ECONNREFUSED"), "http://127.0.0.1:1");
    assert.match(d.message, /cannot reach http:\/\/127\.0\.0\.1:1/);
  });
});
