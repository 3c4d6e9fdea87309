import assert from "node:assert/strict";
import { after, test } from "node:test";
import { createClient } from "./client.js";
import {
  CreateosSandboxConnectionError,
  CreateosSandboxError,
  CreateosSandboxNotFoundError,
  CreateosSandboxRateLimitError,
  CreateosSandboxServerError,
  CreateosSandboxTimeoutError,
  CreateosSandboxValidationError,
} from "./errors.js";
import { Sandbox } from "./sandbox.js";
import { type TestServer, json, ok, startServer, view } from "./test-helpers.js";
import type { RetryHookContext } from "./types.js";

const servers: TestServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});
async function server(handler: Parameters<typeof startServer>[0]): Promise<TestServer> {
  const s = await startServer(handler);
  servers.push(s);
  return s;
}
const fast = { maxRetries: 2, baseDelayMs: 5, maxDelayMs: 50 };

test("auth header, user agent, JSend unwrap; catalog routes send no credentials", async () => {
  const s = await server((req, res) => {
    if (req.url === "/v1/whoami")
      ok(res, { user_id: "u1", stats: { running: 0, paused: 0, other: 0, total: 0 } });
    else if (req.url?.startsWith("/v1/shapes")) ok(res, { data: [{ id: "s-1" }], pagination: { total: 1 } });
    else ok(res, { rootfs: ["devbox:1"], default: "devbox:1" });
  });
  const c = createClient({
    apiKey: "skp_test_key",
    baseUrl: s.url,
    headers: { Authorization: "Bearer sneaky" },
  });
  assert.equal((await c.whoami()).user_id, "u1");
  assert.deepEqual(await c.listShapes(), [{ id: "s-1" }]);
  await c.listRootfs();
  const [who, shapes, rootfs] = s.requests;
  assert.equal(who?.headers["x-api-key"], "skp_test_key");
  assert.equal(who?.headers.authorization, undefined, "generic credential headers are stripped");
  assert.match(String(who?.headers["user-agent"]), /^createos-sandbox-sdk\/0\.7\.1 node-/);
  assert.equal(shapes?.headers["x-api-key"], undefined);
  assert.equal(shapes?.url, "/v1/shapes?limit=500&offset=0");
  assert.equal(rootfs?.headers["x-api-key"], undefined);
});

test("429 with Retry-After is retried for POST after the advertised delay", async () => {
  const s = await server((_req, res, _body, n) => {
    if (n === 1) json(res, 429, { status: "fail", data: "slow down" }, { "retry-after": "1" });
    else
      ok(res, {
        id: "sb-1",
        name: "a",
        ip: "10.0.0.1",
        shape: "s",
        rootfs: "r",
        vcpu: 1,
        mem_mib: 1,
        disk_mib: 1,
        spawn_ms: 1,
        egress: [],
        bandwidth_quota_bytes: -1,
      });
  });
  const retries: RetryHookContext[] = [];
  const c = createClient({
    apiKey: "skp_k1234567",
    baseUrl: s.url,
    hooks: { onRetry: (ctx) => void retries.push(ctx) },
  });
  const t0 = Date.now();
  const sb = await c.createSandbox({ shape: "s" });
  assert.ok(Date.now() - t0 >= 950, "waited for Retry-After");
  assert.equal(sb.id, "sb-1");
  assert.equal(sb.status, "running");
  assert.equal(s.requests.length, 2);
  assert.equal(s.requests[1]?.body, '{"shape":"s"}');
  assert.equal(retries[0]?.reason, "rate-limit");
  assert.equal(retries[0]?.status, 429);
  assert.equal(retries[0]?.headers["x-api-key"], "redacted");
});

test("503 is retried (any method); retries exhausted surface the typed error with request id", async () => {
  const s = await server((_req, res) =>
    json(res, 503, { status: "error", message: "no capacity", code: 503 }, { "x-request-id": "rid-503" }),
  );
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: fast });
  const err = await c.createSandbox({ shape: "s" }).catch((e: unknown) => e);
  assert.ok(err instanceof CreateosSandboxServerError);
  assert.equal(err.requestId, "rid-503");
  assert.equal(err.statusCode, 503);
  assert.equal(err.message, "no capacity");
  assert.equal(s.requests.length, 3, "1 try + 2 retries");
});

test("500 is retried for GET but not for POST", async () => {
  const s = await server((req, res, _b, n) => {
    if (req.method === "GET" && n === 1) json(res, 500, { status: "error", message: "boom", code: 500 });
    else if (req.method === "GET") ok(res, view("sb-2", "running"));
    else json(res, 500, { status: "error", message: "boom", code: 500 });
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: fast });
  const sb = await c.getSandbox("sb-2");
  assert.equal(sb.status, "running");
  await assert.rejects(sb.pause(), CreateosSandboxServerError);
  assert.equal(s.requests.filter((r) => r.method === "POST").length, 1);
});

test("network errors: GET retried, POST not; ConnectionError after exhaustion", async () => {
  let drop = 1;
  const s = await server((req, res) => {
    if (drop > 0 && req.method === "GET") {
      drop--;
      req.socket.destroy();
      return;
    }
    if (req.method === "POST") {
      req.socket.destroy();
      return;
    }
    ok(res, view("sb-3", "paused"));
  });
  const c = createClient({ apiKey: "skp_networkkey123", baseUrl: s.url, retry: fast });
  const sb = await c.getSandbox("sb-3");
  assert.equal(sb.status, "paused");
  const gets = s.requests.filter((r) => r.method === "GET").length;
  assert.equal(gets, 2);
  const err = await sb.resume().catch((e: unknown) => e);
  assert.ok(err instanceof CreateosSandboxConnectionError);
  assert.equal(s.requests.filter((r) => r.method === "POST").length, 1);
  assert.ok(!String((err as Error).message).includes("networkkey"), "message has no key");

  const dead = createClient({ apiKey: "k", baseUrl: "http://127.0.0.1:1", retry: fast });
  await assert.rejects(dead.whoami(), CreateosSandboxConnectionError);
});

test("streaming exec: NDJSON frames (split chunks, SSE, heartbeat); never retried", async () => {
  let n = 0;
  const s = await server((req, res) => {
    n++;
    if (n === 1) {
      json(res, 503, { status: "error", message: "busy", code: 503 }, { "retry-after": "0" });
      return;
    }
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    res.write('{"stdout":"he');
    setTimeout(() => {
      res.write('llo\\n"}\n\n: comment\n{"hb":true}\ndata: {"stderr":"warn"}\nnot json\n');
      res.end('{"exit_code":7}');
    }, 20);
    assert.equal(req.url, "/v1/sandboxes/sb-4/exec?stream=true");
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: fast });
  const sb = new Sandbox(c.http, view("sb-4", "running") as never);
  await assert.rejects(async () => {
    for await (const _ of sb.streamCommand("echo")) {
      // drain
    }
  }, CreateosSandboxServerError);
  assert.equal(s.requests.length, 1, "stream not retried on 503");
  const events = [];
  for await (const ev of sb.streamCommand("echo", ["hello"], { env: { A: "1" } })) events.push(ev);
  assert.deepEqual(events, [
    { type: "stdout", data: "hello\n" },
    { type: "heartbeat" },
    { type: "stderr", data: "warn" },
    { type: "exit", exitCode: 7 },
  ]);
  assert.deepEqual(JSON.parse(s.requests[1]?.body ?? ""), {
    cmd: "echo",
    args: ["hello"],
    env: { A: "1" },
    stream: true,
  });
  assert.equal(s.requests[1]?.headers.accept, "application/x-ndjson");
});

test("streaming exec: break and AbortSignal close the connection", async () => {
  let closes = 0;
  const s = await server((req, res) => {
    res.writeHead(200, { "content-type": "application/x-ndjson" });
    const timer = setInterval(() => res.write('{"stdout":"tick"}\n'), 10);
    res.on("close", () => {
      clearInterval(timer);
      closes++;
    });
    void req;
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url });
  const sb = new Sandbox(c.http, view("sb-5", "running") as never);
  let seen = 0;
  for await (const ev of sb.streamCommand("yes")) {
    if (ev.type === "stdout") seen++;
    if (seen === 2) break;
  }
  const ac = new AbortController();
  const err = await (async () => {
    for await (const _ of sb.streamCommand("yes", [], { signal: ac.signal })) ac.abort();
  })().catch((e: unknown) => e);
  assert.equal((err as Error).name, "AbortError");
  for (let i = 0; i < 100 && closes < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(closes, 2, "server saw both connections close");
});

test("error mapping over the wire: 404 JSend fail, 409 validation, non-JSON body", async () => {
  const s = await server((req, res) => {
    if (req.url?.endsWith("/pause")) json(res, 409, { status: "fail", data: { state: "not running" } });
    else if (req.url?.includes("/files")) {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<h1>bad gateway</h1>");
    } else json(res, 404, { status: "fail", data: "sandbox not found" }, { "x-request-id": "rid-404" });
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: false });
  const nf = await c.getSandbox("sb-x").catch((e: unknown) => e);
  assert.ok(nf instanceof CreateosSandboxNotFoundError);
  assert.equal(nf.requestId, "rid-404");
  assert.equal(nf.resourceId, "sb-x");
  assert.equal(nf.endpoint, "/v1/sandboxes/sb-x");
  assert.equal(nf.method, "GET");
  const sb = new Sandbox(c.http, view("sb-y", "paused") as never);
  await assert.rejects(sb.pause(), CreateosSandboxValidationError);
  const dl = await sb.files.download("/etc/x").catch((e: unknown) => e);
  assert.ok(dl instanceof CreateosSandboxServerError);
  assert.equal(dl.envelope, undefined);
});

test("uploads: buffers retried on 503, streams never", async () => {
  let n = 0;
  const s = await server((_req, res) => {
    n++;
    if (n % 2 === 1) json(res, 503, { status: "error", message: "busy", code: 503 });
    else ok(res, {});
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: fast });
  const sb = new Sandbox(c.http, view("sb-6", "running") as never);
  await sb.files.upload("/tmp/a", "hello");
  assert.equal(s.requests.length, 2);
  assert.equal(s.requests[1]?.body, "hello");
  assert.equal(s.requests[1]?.url, "/v1/sandboxes/sb-6/files?path=%2Ftmp%2Fa");
  assert.equal(s.requests[1]?.headers["content-type"], "application/octet-stream");
  const stream = new ReadableStream<Uint8Array>({
    start(ctl) {
      ctl.enqueue(new TextEncoder().encode("streamed"));
      ctl.close();
    },
  });
  await assert.rejects(sb.files.upload("/tmp/b", stream), CreateosSandboxServerError);
  assert.equal(s.requests.length, 3);
});

test("pagination over the wire, status filter and limit cap", async () => {
  const all = Array.from({ length: 5 }, (_, i) => view(`sb-${i}`, "running"));
  const s = await server((req, res) => {
    const u = new URL(req.url ?? "", "http://x");
    const off = Number(u.searchParams.get("offset"));
    const lim = Math.min(Number(u.searchParams.get("limit")), 2);
    const data = all.slice(off, off + lim);
    ok(res, { data, pagination: { total: all.length, limit: lim, offset: off, count: data.length } });
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url });
  const ids = (await c.listSandboxes({ status: "running" })).map((x) => x.id);
  assert.deepEqual(
    ids,
    all.map((v) => v.id),
  );
  assert.equal(s.requests[0]?.url, "/v1/sandboxes?status=running&limit=500&offset=0");
  const some: string[] = [];
  for await (const sb of c.iterateSandboxes({ limit: 3 })) some.push(sb.id);
  assert.deepEqual(some, ["sb-0", "sb-1", "sb-2"]);
});

test("lifecycle calls: bodies and paths as the published SDK; pause merges a partial view", async () => {
  const s = await server((req, res) => {
    const u = req.url ?? "";
    if (u.endsWith("/pause"))
      json(res, 202, { status: "success", data: { id: "sb-7", status: "pausing" } }, { "x-poll-after": "1" });
    else if (req.method === "PATCH") ok(res, view("sb-7", "running", { auto_pause_after_seconds: 600 }));
    else if (u.endsWith("/fork")) ok(res, view("sb-8", "forking", { forked_from: "sb-7" }));
    else if (req.method === "DELETE" && u.includes("/disks/")) ok(res, { detached: true });
    else if (req.method === "DELETE") ok(res, { id: "sb-7", status: "destroying" });
    else ok(res, { ok: true });
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url });
  const sb = new Sandbox(c.http, view("sb-7", "running", { name: "keep-me" }) as never);
  await sb.pause();
  assert.equal(sb.status, "pausing");
  assert.equal(sb.name, "keep-me");
  await sb.setAutoPause(600);
  await sb.setAutoPause(null);
  const child = await sb.fork({ start_paused: true });
  assert.equal(child.id, "sb-8");
  await sb.detachDisk({ diskId: "disk_1", mountPath: "/mnt/d" });
  await sb.attachNetwork("net-1");
  assert.deepEqual(await sb.destroy(), { id: "sb-7", status: "destroying" });
  assert.equal(sb.status, "destroying");
  const bodies = s.requests.map((r) => `${r.method} ${r.url} ${r.body}`);
  assert.deepEqual(bodies, [
    "POST /v1/sandboxes/sb-7/pause ",
    'PATCH /v1/sandboxes/sb-7 {"auto_pause_after_seconds":600}',
    'PATCH /v1/sandboxes/sb-7 {"disable_auto_pause":true}',
    'POST /v1/sandboxes/sb-7/fork {"start_paused":true}',
    "DELETE /v1/sandboxes/sb-7/disks/disk_1?mount_path=%2Fmnt%2Fd ",
    'POST /v1/sandboxes/sb-7/networks {"id":"net-1"}',
    "DELETE /v1/sandboxes/sb-7 ",
  ]);
});

test("waitUntil* polls until the state, fails on terminal states, honours the budget", async () => {
  let n = 0;
  const s = await server((_req, res) => {
    n++;
    ok(res, view("sb-9", n < 3 ? "resuming" : n < 5 ? "running" : "failed"));
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url });
  const sb = new Sandbox(c.http, view("sb-9", "resuming") as never);
  const t0 = Date.now();
  await sb.waitUntilRunning();
  assert.equal(sb.status, "running");
  assert.ok(Date.now() - t0 >= 400, "adaptive 250 ms interval");
  await assert.rejects(sb.waitUntilPaused({ timeoutMs: 5_000 }), (e: unknown) => {
    return e instanceof CreateosSandboxError && /terminal state "failed"/.test(e.message);
  });
  const stuck = await server((_req, res) => ok(res, view("sb-10", "pausing")));
  const c2 = createClient({ apiKey: "k", baseUrl: stuck.url });
  const sb2 = new Sandbox(c2.http, view("sb-10", "pausing") as never);
  await assert.rejects(sb2.waitUntilPaused({ timeoutMs: 300 }), CreateosSandboxTimeoutError);
});

test("readyz returns the 503 payload instead of throwing and is never retried", async () => {
  const s = await server((_req, res) =>
    json(res, 503, { status: "fail", data: { ready: false, reason: "building images" } }),
  );
  const c = createClient({ baseUrl: s.url });
  assert.deepEqual(await c.readyz(), { ready: false, reason: "building images" });
  assert.equal(s.requests.length, 1);
});

test("rate-limit error when retries are off; per-request timeout", async () => {
  const s = await server((req, res) => {
    if (req.url === "/v1/whoami")
      json(res, 429, { status: "fail", data: "too many" }, { "retry-after": "5" });
    else setTimeout(() => ok(res, {}), 500);
  });
  const c = createClient({ apiKey: "k", baseUrl: s.url, retry: false });
  const err = await c.whoami().catch((e: unknown) => e);
  assert.ok(err instanceof CreateosSandboxRateLimitError);
  assert.equal(err.retryAfterSeconds, 5);
  await assert.rejects(c.networks.list({ timeoutMs: 50 }), CreateosSandboxTimeoutError);
});

test("requests never leave the configured origin", async () => {
  const c = createClient({ apiKey: "k", baseUrl: "http://127.0.0.1:9" });
  await assert.rejects(c.http.request("GET", "http://evil.example/v1/x"), /non-base origin/);
});
