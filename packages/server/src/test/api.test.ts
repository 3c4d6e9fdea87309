/** The REST surface that needs no VM: auth, validation, catalog, pagination, tenancy, networks, CLI. */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  ED25519,
  SANDBOX_ROUTES,
  type ServerProc,
  call,
  cleanup,
  cli,
  newUser,
  startProc,
} from "./helpers.js";

const GHOST = "sb-01jq0000000000000000000000";

describe("control plane without an engine", () => {
  let s: ServerProc;
  let key: string;
  let other: string;

  before(async () => {
    s = await startProc();
    key = s.adminKey;
    other = await newUser(s.dataDir, "bob");
  });
  after(async () => {
    await s.stop();
    cleanup(s.dataDir);
  });

  it("health, readiness and the public catalog need no credentials", async () => {
    const h = await call(s.url, "GET", "/healthz");
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: "success", data: { up: true } });
    const r = await call(s.url, "GET", "/readyz");
    assert.equal(r.status, 503);
    assert.equal(r.json.data.ready, false);
    assert.match(r.json.data.reason, /engine/);
    assert.ok(r.headers.get("retry-after"));
    const shapes = await call(s.url, "GET", "/v1/shapes");
    assert.equal(shapes.status, 200);
    assert.deepEqual(
      shapes.json.data.data.map((x: { id: string }) => x.id),
      ["s-1vcpu-256mb", "s-1vcpu-512mb", "s-1vcpu-1gb", "s-2vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-4gb"],
    );
    assert.deepEqual(shapes.json.data.pagination, { total: 6, limit: 50, offset: 0, count: 6 });
    assert.equal(shapes.json.data.data[0].default_disk_mib, 10240);
    const rootfs = await call(s.url, "GET", "/v1/rootfs");
    assert.equal(rootfs.json.data.default, "devbox:1");
    assert.ok(rootfs.json.data.rootfs.includes("debian:12"));
    assert.ok(
      rootfs.json.data.entries.every((e: { name: string; description: string }) => e.name && e.description),
    );
  });

  it("X-Request-Id is echoed, or generated, on every response", async () => {
    const a = await call(s.url, "GET", "/healthz", { headers: { "x-request-id": "abc-123" } });
    assert.equal(a.headers.get("x-request-id"), "abc-123");
    const b = await call(s.url, "GET", "/v1/nothing");
    assert.match(b.headers.get("x-request-id") ?? "", /^req_/);
    assert.equal(b.status, 404);
    assert.equal(b.json.status, "fail");
  });

  it("auth: missing, invalid, and revoked keys answer 401 with the auth field", async () => {
    const m = await call(s.url, "GET", "/v1/whoami");
    assert.equal(m.status, 401);
    assert.deepEqual(m.json, { status: "fail", data: { auth: "missing api key" } });
    const i = await call(s.url, "GET", "/v1/sandboxes", { key: "skp_nope" });
    assert.deepEqual(i.json, { status: "fail", data: { auth: "invalid api key" } });
    const tok = await call(s.url, "GET", "/v1/whoami", { headers: { "x-access-token": key } });
    assert.equal(tok.status, 200);
    assert.equal((await call(s.url, "GET", "/v1/whoami", { headers: { "x-auth-token": key } })).status, 200);
    // The session headers win over X-Api-Key, like the published clients expect.
    const both = await call(s.url, "GET", "/v1/whoami", { key, headers: { "x-access-token": "skp_wrong" } });
    assert.equal(both.status, 401);
    const w = await call(s.url, "GET", "/v1/whoami", { key });
    assert.deepEqual(w.json.data.stats, { running: 0, paused: 0, other: 0, total: 0 });
    assert.match(w.json.data.user_id, /^usr_/);
    for (const path of [
      "/v1/sandboxes",
      "/v1/networks",
      "/v1/disks",
      "/v1/templates",
      "/v1/hosts",
      `/v1/sandboxes/${GHOST}`,
    ]) {
      assert.equal((await call(s.url, "GET", path)).status, 401, path);
    }
  });

  it("users create works while serving; keys revoke takes effect within the 1 s auth cache", async () => {
    const k = await newUser(s.dataDir, "carol");
    assert.match(k, /^skp_[A-Za-z0-9_-]{32}$/);
    assert.equal((await call(s.url, "GET", "/v1/whoami", { key: k })).status, 200);
    const list = await cli(["users", "list", "--data-dir", s.dataDir]);
    assert.match(list.stdout, /carol/);
    assert.ok(!list.stdout.includes(k), "users list never prints whole keys");
    const rev = await cli(["keys", "revoke", k.slice(0, 12), "--data-dir", s.dataDir]);
    assert.equal(rev.code, 0, rev.stderr);
    // The server trusts a verified key for at most CREATEOS_SANDBOX_AUTH_CACHE_MS (1 s) without a DB read.
    const t0 = Date.now();
    let status = 200;
    while (status !== 401 && Date.now() - t0 < 3000) {
      status = (await call(s.url, "GET", "/v1/whoami", { key: k })).status;
      if (status !== 401) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 401);
    assert.ok(Date.now() - t0 <= 1500, `revocation took ${Date.now() - t0} ms`);
    assert.equal((await cli(["keys", "revoke", "skp_", "--data-dir", s.dataDir])).code, 1);
  });

  it("create validates every field and names it", async () => {
    const bad = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      body: {
        shape: "s-bad",
        name: "Bad_Name",
        auto_pause_after_seconds: 10,
        bandwidth_quota_bytes: 1,
        envs: { "1BAD": "x" },
        egress: ["not a host"],
        ssh_pubkeys: ["ssh-ed25519 garbage"],
        disk_mib: -1,
        region: "mars",
      },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.status, "fail");
    assert.equal(bad.json.data.shape, "unknown shape: s-bad");
    for (const f of [
      "name",
      "auto_pause_after_seconds",
      "bandwidth_quota_bytes",
      "envs",
      "egress",
      "ssh_pubkeys",
      "disk_mib",
      "region",
    ]) {
      assert.ok(bad.json.data[f], `field ${f} named: ${JSON.stringify(bad.json.data)}`);
    }
    const missing = await call(s.url, "POST", "/v1/sandboxes", { key, body: {} });
    assert.deepEqual(missing.json.data, { shape: "shape is required" });
    const rootfs = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      body: { shape: "s-1vcpu-256mb", rootfs: "nope:1" },
    });
    assert.deepEqual(rootfs.json.data, { rootfs: "unknown rootfs: nope:1" });
    const many: Record<string, string> = {};
    for (let i = 0; i < 65; i++) many[`K${i}`] = "v";
    const envs = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      body: { shape: "s-1vcpu-256mb", envs: many },
    });
    assert.match(envs.json.data.envs, /at most 64/);
    const big = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      body: { shape: "s-1vcpu-256mb", envs: { A: "x".repeat(4097) } },
    });
    assert.match(big.json.data.envs, /4096/);
    // A valid body with no engine: 503 with Retry-After, and nothing was recorded.
    const ok = await call(s.url, "POST", "/v1/sandboxes", { key, body: { shape: "s-1vcpu-256mb" } });
    assert.equal(ok.status, 503);
    assert.deepEqual(Object.keys(ok.json).sort(), ["code", "message", "status"]);
    assert.equal(ok.json.code, 503);
    assert.ok(ok.headers.get("retry-after"));
    const list = await call(s.url, "GET", "/v1/sandboxes", { key });
    assert.equal(list.json.data.pagination.total, 0);
  });

  it("malformed JSON, wrong content type, non-object body, oversized body and huge headers are 4xx", async () => {
    const mal = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      raw: "{nope",
      headers: { "content-type": "application/json" },
    });
    assert.equal(mal.status, 400);
    assert.ok(mal.json.data.body);
    const ct = await call(s.url, "POST", "/v1/sandboxes", {
      key,
      raw: "{}",
      headers: { "content-type": "text/plain" },
    });
    assert.equal(ct.status, 400);
    const arr = await call(s.url, "POST", "/v1/networks", { key, body: [1, 2] });
    assert.equal(arr.status, 400);
    const huge = await call(s.url, "POST", "/v1/networks", {
      key,
      raw: JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(huge.status, 413);
    const hdr = await rawRequest(
      s.port,
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(40_000)}\r\n\r\n`,
    );
    assert.match(hdr, /^HTTP\/1.1 400 /);
    assert.match(hdr, /"headers"/);
    const garbage = await rawRequest(s.port, "NOT HTTP AT ALL\r\n\r\n");
    assert.match(garbage, /^HTTP\/1.1 400 /);
  });

  it("files: relative path 400, oversized upload 413 before the body is read", async () => {
    const rel = await call(s.url, "PUT", `/v1/sandboxes/${GHOST}/files?path=etc/passwd`, { key, raw: "x" });
    assert.equal(rel.status, 400);
    assert.match(rel.json.data.path, /absolute/);
    const get = await call(s.url, "GET", `/v1/sandboxes/${GHOST}/files?path=relative`, { key });
    assert.equal(get.status, 400);
    const res = await rawRequest(
      s.port,
      `PUT /v1/sandboxes/${GHOST}/files?path=/big HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${key}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${600 * 1024 * 1024}\r\n\r\n`,
    );
    assert.match(res, /^HTTP\/1.1 413 /);
  });

  it("every sandbox route answers 404 for unknown and foreign ids, never a missing route", async () => {
    for (const id of [GHOST, "sb_01JQ0000000000000000000000", "not-an-id"]) {
      for (const [m, suffix, body] of SANDBOX_ROUTES) {
        const r = await call(s.url, m, `/v1/sandboxes/${id}${suffix}`, {
          key: other,
          ...(body ? { body } : {}),
        });
        assert.equal(r.status, 404, `${m} ${suffix} ${id}: ${r.text}`);
        assert.equal(r.json.status, "fail");
        assert.ok(r.json.data.sandbox || r.json.data.network, r.text);
      }
    }
    assert.equal((await call(s.url, "GET", "/v1/sandboxes/by-ip/10.201.0.9", { key })).status, 404);
  });

  it("networks: CRUD, duplicate names, name-or-id lookup, tenancy, pagination and limits", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const r = await call(s.url, "POST", "/v1/networks", { key, body: { name: `net${i}` } });
      assert.equal(r.status, 200, r.text);
      assert.match(r.json.data.id, /^net-[0-9a-z]{26}$/);
      assert.equal(r.json.data.member_count, 0);
      ids.push(r.json.data.id);
    }
    const dup = await call(s.url, "POST", "/v1/networks", { key, body: { name: "net0" } });
    assert.equal(dup.status, 400);
    assert.ok(dup.json.data.name);
    const badName = await call(s.url, "POST", "/v1/networks", { key, body: { name: "Bad Name" } });
    assert.equal(badName.status, 400);
    const p1 = await call(s.url, "GET", "/v1/networks?limit=3&offset=0", { key });
    assert.deepEqual(p1.json.data.pagination, { total: 7, limit: 3, offset: 0, count: 3 });
    const p3 = await call(s.url, "GET", "/v1/networks?limit=3&offset=6", { key });
    assert.deepEqual(p3.json.data.pagination, { total: 7, limit: 3, offset: 6, count: 1 });
    const clamp = await call(s.url, "GET", "/v1/networks?limit=100000", { key });
    assert.equal(clamp.json.data.pagination.limit, 500);
    const junk = await call(s.url, "GET", "/v1/networks?limit=abc", { key });
    assert.equal(junk.status, 400);
    assert.ok(junk.json.data.limit);
    const byName = await call(s.url, "GET", "/v1/networks/net3", { key });
    assert.equal(byName.json.data.id, ids[3]);
    assert.deepEqual(byName.json.data.members, []);
    const underscore = await call(s.url, "GET", `/v1/networks/${ids[3]!.replace("net-", "net_")}`, { key });
    assert.equal(underscore.json.data.id, ids[3]);
    // Another tenant sees none of them.
    assert.equal((await call(s.url, "GET", `/v1/networks/${ids[0]}`, { key: other })).status, 404);
    assert.equal((await call(s.url, "DELETE", `/v1/networks/${ids[0]}`, { key: other })).status, 404);
    assert.equal((await call(s.url, "GET", "/v1/networks", { key: other })).json.data.pagination.total, 0);
    for (let i = 7; i < 10; i++)
      await call(s.url, "POST", "/v1/networks", { key, body: { name: `net${i}` } });
    const over = await call(s.url, "POST", "/v1/networks", { key, body: { name: "net10" } });
    assert.equal(over.status, 403);
    assert.match(over.json.data.limit, /limit/);
    const del = await call(s.url, "DELETE", "/v1/networks/net9", { key });
    assert.deepEqual(del.json, { status: "success", data: { ok: true } });
    assert.equal((await call(s.url, "GET", "/v1/networks/net9", { key })).status, 404);
  });

  it("disks validate, then check the bucket (400 when unreachable); templates validate then 501", async () => {
    const bad = await call(s.url, "POST", "/v1/disks", {
      key,
      body: { name: "BAD", kind: "nfs", config: {} },
    });
    assert.equal(bad.status, 400);
    for (const f of ["name", "kind", "config.bucket", "config.endpoint", "credentials"])
      assert.ok(bad.json.data[f], f);
    const good = await call(s.url, "POST", "/v1/disks", {
      key,
      body: {
        name: "data",
        kind: "s3",
        config: { bucket: "my-bucket", endpoint: "http://127.0.0.1:1" },
        credentials: { access_key: "a", secret_key: "b" },
      },
    });
    assert.equal(good.status, 400);
    assert.match(
      good.json.data["config.endpoint"],
      /^the endpoint 127.0.0.1 is at 127.0.0.1, an address of this machine: disks reach only public/,
      "refused before connecting (disks.test.ts has the listed loopback's ECONNREFUSED)",
    );
    const none = await call(s.url, "GET", "/v1/disks", { key });
    assert.deepEqual(none.json.data.data, [], "a failed registration leaves nothing behind");
    const df = await call(s.url, "POST", "/v1/templates", {
      key,
      body: { name: "t1", dockerfile: "FROM ubuntu\nCOPY . /" },
    });
    assert.equal(df.status, 400);
    assert.match(df.json.data.dockerfile, /FROM base/);
    const copy = await call(s.url, "POST", "/v1/templates", {
      key,
      body: { name: "t1", dockerfile: "FROM nodeops/sandbox:debian\nCOPY . /" },
    });
    assert.match(copy.json.data.dockerfile, /COPY/);
    const ok = await call(s.url, "POST", "/v1/templates", {
      key,
      body: { name: "t1", dockerfile: "FROM nodeops/sandbox:debian\nRUN true" },
    });
    // accepted at once; with no host to build on the build fails, saying why
    assert.equal(ok.status, 200);
    assert.equal(ok.json.data.status, "pending");
    assert.match(ok.json.data.id, /^tpl_[0-9a-z]{26}$/);
    assert.equal(ok.json.data.ext4_size_bytes, 0);
    const list = await call(s.url, "GET", "/v1/templates", { key });
    assert.deepEqual(list.json.data.pagination, { total: 1, limit: 50, offset: 0, count: 1 });
    assert.equal(list.json.data.data[0].id, ok.json.data.id);
    // a name resolves to its latest ready build only
    assert.equal((await call(s.url, "GET", "/v1/templates/t1", { key })).status, 404);
    const byId = await call(s.url, "GET", `/v1/templates/${ok.json.data.id}?include=dockerfile`, { key });
    assert.equal(byId.json.data.dockerfile, "FROM nodeops/sandbox:debian\nRUN true");
    for (
      let i = 0;
      i < 50 &&
      (await call(s.url, "GET", `/v1/templates/${ok.json.data.id}`, { key })).json.data.status !== "failed";
      i++
    )
      await new Promise((r) => setTimeout(r, 100));
    const failed = await call(s.url, "GET", `/v1/templates/${ok.json.data.id}`, { key });
    assert.equal(failed.json.data.status, "failed");
    const text = await fetch(`${s.url}/v1/templates/${ok.json.data.id}/logs`, {
      headers: { "x-api-key": key },
    });
    assert.match(await text.text(), /build failed: .*host/);
    const other = await newUser(s.dataDir, "tplother");
    assert.equal((await call(s.url, "GET", `/v1/templates/${ok.json.data.id}`, { key: other })).status, 404);
    const del = await call(s.url, "DELETE", `/v1/templates/${ok.json.data.id}`, { key });
    assert.equal(del.json.data.status, "destroyed");
    assert.equal((await call(s.url, "GET", `/v1/templates/${ok.json.data.id}`, { key })).status, 404);
  });

  it("method not allowed is 405 with Allow; unknown routes 404 JSend", async () => {
    const r = await call(s.url, "PUT", "/v1/shapes");
    assert.equal(r.status, 405);
    assert.match(r.headers.get("allow") ?? "", /GET/);
    const u = await call(s.url, "GET", "/v2/x");
    assert.equal(u.status, 404);
    assert.ok(u.json.data.route);
  });

  it("shell and tunnel without Upgrade are 400; upgrades are authenticated and 404 on unknown ids", async () => {
    const plain = await call(s.url, "POST", `/v1/sandboxes/${GHOST}/shell`, { key });
    assert.equal(plain.status, 400);
    const noAuth = await rawRequest(
      s.port,
      `POST /v1/sandboxes/${GHOST}/tunnel/22 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\nContent-Length: 0\r\n\r\n`,
    );
    assert.match(noAuth, /^HTTP\/1.1 401 /);
    const nf = await rawRequest(
      s.port,
      `POST /v1/sandboxes/${GHOST}/shell HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${key}\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\nContent-Length: 0\r\n\r\n`,
    );
    assert.match(nf, /^HTTP\/1.1 404 /);
    assert.match(nf, /"status":"fail"/);
  });

  it("metrics are Prometheus text with request counters and sandbox states, for the admin only", async () => {
    assert.equal((await call(s.url, "GET", "/metrics")).status, 401);
    const bob = await call(s.url, "GET", "/metrics", { key: other });
    assert.equal(bob.status, 403);
    assert.match(bob.json.data.auth, /admin user's API key/);
    const m = await call(s.url, "GET", "/metrics", { key });
    assert.equal(m.status, 200);
    assert.match(m.text, /createos_http_requests_total\{route="\/healthz",method="GET",status="200"\} \d+/);
    assert.match(m.text, /createos_http_request_duration_seconds_bucket\{/);
    assert.match(m.text, /# TYPE createos_sandboxes gauge/);
  });

  it("request logs are JSON lines with request id, route, status and no credentials", async () => {
    await call(s.url, "GET", "/v1/whoami", { key, headers: { "x-request-id": "log-probe-1" } });
    const line = await s.waitLog(/log-probe-1/);
    const rec = JSON.parse(line);
    assert.equal(rec.route, "/v1/whoami");
    assert.equal(rec.status, 200);
    assert.equal(typeof rec.ms, "number");
    assert.ok(!s.logs.join("\n").includes(key), "the API key never reaches the log");
  });
});

describe("rate limit", () => {
  it("a low per-key limit answers 429 with Retry-After, per credential", async () => {
    const s = await startProc({
      env: { CREATEOS_SANDBOX_RATE_LIMIT_RPS: "2", CREATEOS_SANDBOX_RATE_LIMIT_BURST: "3" },
    });
    try {
      const other = await newUser(s.dataDir, "other");
      const codes: number[] = [];
      for (let i = 0; i < 6; i++)
        codes.push((await call(s.url, "GET", "/v1/whoami", { key: s.adminKey })).status);
      assert.deepEqual(codes.slice(0, 3), [200, 200, 200]);
      assert.ok(codes.includes(429), String(codes));
      const limited = await call(s.url, "GET", "/v1/whoami", { key: s.adminKey });
      assert.equal(limited.status, 429);
      assert.ok(Number(limited.headers.get("retry-after")) >= 1);
      assert.ok(limited.json.data.rate);
      assert.equal((await call(s.url, "GET", "/v1/whoami", { key: other })).status, 200);
      assert.equal((await call(s.url, "GET", "/healthz")).status, 200);
    } finally {
      await s.stop();
      cleanup(s.dataDir);
    }
  });
});

describe("program", () => {
  it("--help everywhere, usage errors exit 2", async () => {
    for (const args of [
      ["--help"],
      ["serve", "--help"],
      ["users", "--help"],
      ["keys", "--help"],
      ["images", "--help"],
      ["doctor", "--help"],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 0, args.join(" "));
      assert.match(r.stdout, /createos-sandbox/);
    }
    assert.equal((await cli(["frobnicate"])).code, 2);
    assert.equal((await cli(["serve", "--port", "99999"])).code, 2);
  });

  it("first start without a bootstrap key writes the admin key to a 0600 file", async () => {
    const { mkdtempSync, statSync, readFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "csb-first-"));
    const s = await startProc({ dataDir: dir, env: { CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: "" } });
    try {
      const line = await s.waitLog(/admin-api-key/);
      assert.match(line, /admin-api-key/);
      const file = join(dir, "admin-api-key");
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const k = readFileSync(file, "utf8").trim();
      assert.equal((await call(s.url, "GET", "/v1/whoami", { key: k })).status, 200);
    } finally {
      await s.stop();
      cleanup(dir);
    }
  });
});

function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, "127.0.0.1");
    let out = "";
    sock.on("data", (d) => {
      out += d.toString();
    });
    sock.on("error", () => resolve(out));
    sock.on("close", () => resolve(out));
    sock.write(text);
    setTimeout(() => sock.destroy(), 3000);
  });
}
