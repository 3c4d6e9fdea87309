import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_BASE_URL, normalizeBaseUrl, resolveConfig } from "./config.js";
import { CreateosSandboxError } from "./errors.js";

function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test("base URL validation", () => {
  assert.equal(normalizeBaseUrl("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
  assert.equal(normalizeBaseUrl("https://api.example.com/prefix///"), "https://api.example.com/prefix");
  for (const bad of [
    "not a url",
    "ftp://example.com",
    "https://user:pass@example.com",
    "https://user@example.com",
    "https://example.com/?a=1",
    "https://example.com/#frag",
    "https://example.com/?",
  ]) {
    assert.throws(() => normalizeBaseUrl(bad), CreateosSandboxError, bad);
  }
  // The message never echoes user-info.
  try {
    normalizeBaseUrl("https://me:hunter2@example.com");
  } catch (err) {
    assert.ok(!(err as Error).message.includes("hunter2"));
  }
});

test("env vars: CREATEOS_SANDBOX_API_KEY and CREATEOS_SANDBOX_BASE_URL; options win; blanks ignored", () => {
  withEnv({ CREATEOS_SANDBOX_API_KEY: "skp_env", CREATEOS_SANDBOX_BASE_URL: "http://127.0.0.1:9/" }, () => {
    const c = resolveConfig({});
    assert.equal(c.apiKey, "skp_env");
    assert.equal(c.baseUrl, "http://127.0.0.1:9");
    const o = resolveConfig({ apiKey: "skp_opt", baseUrl: "http://localhost:1" });
    assert.equal(o.apiKey, "skp_opt");
    assert.equal(o.baseUrl, "http://localhost:1");
  });
  withEnv({ CREATEOS_SANDBOX_API_KEY: undefined, CREATEOS_SANDBOX_BASE_URL: "  " }, () => {
    const c = resolveConfig({});
    assert.equal(c.apiKey, undefined);
    assert.equal(c.baseUrl, DEFAULT_BASE_URL);
  });
});

test("defaults and conflicting auth options", () => {
  withEnv({ CREATEOS_SANDBOX_API_KEY: undefined }, () => {
    const c = resolveConfig({});
    assert.equal(c.timeoutMs, 60_000);
    assert.deepEqual(c.retry, { maxRetries: 2, baseDelayMs: 500, maxDelayMs: 30_000 });
    assert.match(c.userAgent, /^createos-sandbox-sdk\/0\.7\.1 node-/);
    assert.equal(resolveConfig({ retry: false }).retry, false);
    assert.deepEqual(resolveConfig({ retry: { maxRetries: 5 } }).retry, {
      maxRetries: 5,
      baseDelayMs: 500,
      maxDelayMs: 30_000,
    });
    assert.throws(
      () => resolveConfig({ apiKey: "k", authHeaders: { "X-Access-Token": "t" } }),
      CreateosSandboxError,
    );
  });
});
