/**
 * The control plane over several host daemons, driven through the real wire: two scripted daemons behind
 * `createHostdServer` on loopback, reached by `RemoteHostDaemon`. Placement, per-host routing, a host
 * going down (503 + Retry-After at once, never a hang or a 500) and coming back. The same paths on real
 * VMs are multihost.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { createHostdServer, listenHostd } from "@createos-sandbox/hostd/remote/serve";
import { RemoteHostDaemon } from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { EPHEMERAL_EDGE, call } from "./helpers.js";

const TOKEN = "hosts-test-token-0123456789";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A scripted daemon under a given id, served on a fixed port so it can be stopped and restarted. */
class ScriptedHost {
  readonly daemon = new ScriptedDaemon();
  server: Server | undefined;
  url = "";
  constructor(readonly id: string) {
    const info = this.daemon.info.bind(this.daemon);
    this.daemon.info = async () => ({ ...(await info()), id });
  }
  async start(listen = "127.0.0.1:0"): Promise<void> {
    this.server = createHostdServer(this.daemon, { token: TOKEN });
    this.url = await listenHostd(this.server, listen);
  }
  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe("control plane with two remote host daemons", () => {
  const a = new ScriptedHost("host-a");
  const b = new ScriptedHost("host-b");
  const dataDir = mkdtempSync(join(tmpdir(), "csb-hosts-"));
  let srv: RunningServer;
  let key = "";
  const remotes: RemoteHostDaemon[] = [];
  const ids: Record<string, string> = {};

  before(async () => {
    await a.start();
    await b.start();
    const cfg = loadConfig(
      { dataDir, port: 0 },
      { ...EPHEMERAL_EDGE, CREATEOS_SANDBOX_SCHEDULER_INTERVAL_MS: "200" },
    );
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    const user = await store.createUser("alice");
    key = `skp_${"k".repeat(32)}`;
    await store.addApiKey(user.id, key);
    srv = await startServer(
      cfg,
      createLogger(() => undefined),
      store,
    );
    for (const h of [a, b]) {
      const r = new RemoteHostDaemon(h.url, { token: TOKEN, idleTimeoutMs: 1500 });
      remotes.push(r);
      void srv.attachHost(r, h.url);
    }
    await until("both hosts ready", async () =>
      srv.app.hosts.anyReady() && srv.app.hosts.all().every((h) => h.healthy && !h.notReady)
        ? true
        : undefined,
    );
  });
  after(async () => {
    await srv.close();
    for (const r of remotes) await r.close();
    await a.stop();
    await b.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const exec = (id: string) =>
    call(srv.url, "POST", `/v1/sandboxes/${id}/exec`, { key, body: { cmd: "fail" } });

  test("new sandboxes spread over both hosts; each host answers for its own", async () => {
    for (const n of ["one", "two"]) {
      const r = await call(srv.url, "POST", "/v1/sandboxes", {
        key,
        body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", name: n },
      });
      assert.equal(r.status, 200, r.text);
      ids[r.json.data.host_id] = r.json.data.id;
    }
    assert.deepEqual(Object.keys(ids).sort(), ["host-a", "host-b"]);
    assert.ok(a.daemon.vms.has(ids["host-a"]!) && !a.daemon.vms.has(ids["host-b"]!));
    assert.ok(b.daemon.vms.has(ids["host-b"]!) && !b.daemon.vms.has(ids["host-a"]!));
    const r = await exec(ids["host-b"]!);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.result.exit_code, 3);
    assert.equal(r.json.data.result.stderr, "bad\n");
    const asked = await call(srv.url, "POST", "/v1/sandboxes", {
      key,
      body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", host_id: "host-a" },
    });
    assert.equal(asked.json.data.host_id, "host-a");
    const unknown = await call(srv.url, "POST", "/v1/sandboxes", {
      key,
      body: { shape: "s-1vcpu-256mb", host_id: "nope" },
    });
    assert.equal(unknown.status, 400);
    assert.match(unknown.text, /unknown host/);
  });

  test("GET /v1/hosts lists both with capacity and health", async () => {
    const r = await call(srv.url, "GET", "/v1/hosts", { key });
    assert.equal(r.status, 200);
    const hosts = r.json.data.data;
    const byId = Object.fromEntries(
      (hosts as { id: string; healthy: boolean; accel: string }[]).map((h) => [h.id, h]),
    );
    assert.deepEqual(Object.keys(byId).sort(), ["host-a", "host-b"]);
    assert.equal(byId["host-a"]?.healthy, true);
    assert.equal(byId["host-b"]?.accel, "tcg");
  });

  test("a host that goes down answers 503 with Retry-After at once; the other keeps working", async () => {
    await b.stop();
    const t0 = Date.now();
    const r = await exec(ids["host-b"]!);
    assert.equal(r.status, 503, r.text);
    assert.ok(Number(r.headers.get("retry-after")) > 0);
    assert.ok(Date.now() - t0 < 3000, "answered without waiting on the dead host");
    await until("health check marks host-b down", async () =>
      srv.app.hosts.byId("host-b")?.healthy === false ? true : undefined,
    );
    for (const [method, path] of [
      ["POST", `/v1/sandboxes/${ids["host-b"]}/pause`],
      ["DELETE", `/v1/sandboxes/${ids["host-b"]}`],
      ["GET", `/v1/sandboxes/${ids["host-b"]}/files?path=/x`],
    ] as const) {
      const res = await call(srv.url, method, path, { key, ...(method === "POST" ? { body: {} } : {}) });
      assert.equal(res.status, 503, `${method} ${path}: ${res.text}`);
      assert.ok(res.headers.get("retry-after"));
    }
    const row = await call(srv.url, "GET", `/v1/sandboxes/${ids["host-b"]}`, { key });
    assert.equal(row.json.data.status, "running", "nothing was changed by the refused calls");
    assert.equal((await exec(ids["host-a"]!)).status, 200);
    for (let i = 0; i < 3; i++) {
      const c = await call(srv.url, "POST", "/v1/sandboxes", {
        key,
        body: { shape: "s-1vcpu-256mb", rootfs: "debian:12" },
      });
      assert.equal(c.json.data.host_id, "host-a", "placement skips the host that is down");
    }
  });

  test("the host comes back on its address: its sandboxes work again", async () => {
    await b.start(b.url.replace("http://", ""));
    await until("host-b healthy again", async () =>
      srv.app.hosts.byId("host-b")?.healthy ? true : undefined,
    );
    const r = await exec(ids["host-b"]!);
    assert.equal(r.status, 200, r.text);
  });
});
