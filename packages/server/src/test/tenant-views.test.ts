/**
 * What one tenant may see and do through the HTTP API of an in-process control plane over a scripted host
 * daemon: the request id on responses a route writes itself, exec's declared-env rule, `GET /v1/hosts`
 * and `status_reason`s without the host's own words (addresses, sockets, paths, free memory), and what a
 * host's refusal of a create leaves behind.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { type HostDaemon, HostdError } from "@createos-sandbox/protocol";
import WebSocket from "ws";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SHELL_WS_PROTOCOL } from "../routes/shell-ws.js";
import { SqliteStore } from "../store/sqlite.js";
import { EPHEMERAL_EDGE, attachReady, call } from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** What a host daemon says for an operator: none of it may reach a tenant. */
const HOST_WORDS = /var\/lib|hostd\.sock|ECONNREFUSED|10\.9\.8\.7|812 MiB|hostd-internal/;
const MEMORY =
  "not enough free memory to create a sandbox: 812 MiB free of 64000 MiB, /var/lib/csb/hostd/vms/sb-x";

describe("what a tenant sees", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-views-"));
  const daemon = new ScriptedDaemon();
  let srv: RunningServer;
  const keys: Record<string, string> = {};

  before(async () => {
    const cfg = loadConfig({ dataDir, port: 0 }, { ...EPHEMERAL_EDGE });
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    for (const name of ["admin", "alice"]) {
      const user = (await store.getUserByName(name)) ?? (await store.createUser(name));
      keys[name] = `skp_${name.at(-1)!.repeat(32)}`;
      await store.addApiKey(user.id, keys[name]!);
    }
    srv = await startServer(
      cfg,
      createLogger(() => undefined),
      store,
    );
    await attachReady(srv, daemon);
  });
  after(async () => {
    await srv.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const req = (method: string, path: string, body?: unknown, who = "alice") =>
    call(srv.url, method, path, { key: keys[who]!, ...(body === undefined ? {} : { body }) });
  const created = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await req("POST", "/v1/sandboxes", { shape: "s-1vcpu-256mb", rootfs: "debian:12", ...body });
    assert.equal(r.status, 200, r.text);
    return r.json.data.id;
  };
  const settled = async (path: string, busy: string[]) => {
    for (let i = 0; i < 200; i++) {
      const g = await req("GET", path);
      if (!busy.includes(g.json.data.status)) return g.json.data;
      await sleep(25);
    }
    assert.fail(`${path} never left ${busy.join("/")}`);
  };
  /** The daemon's next `method` call fails with `err`; later ones run as scripted. */
  const failOnce = (method: keyof HostDaemon, err: Error) => {
    const d = daemon as unknown as Record<string, unknown>;
    d[method] = async () => {
      delete d[method];
      throw err;
    };
  };

  test("template logs, plain and followed, carry X-Request-Id like every response", async () => {
    const t = await req("POST", "/v1/templates", {
      name: "plain",
      dockerfile: "FROM nodeops/sandbox:debian\n",
    });
    assert.equal(t.status, 200, t.text);
    const id = t.json.data.id;
    assert.equal((await settled(`/v1/templates/${id}`, ["pending", "building"])).status, "ready");
    for (const q of ["", "?follow=true"]) {
      const r = await call(srv.url, "GET", `/v1/templates/${id}/logs${q}`, {
        key: keys.alice!,
        headers: { "x-request-id": `logs-${q.length}` },
      });
      assert.equal(r.status, 200, r.text);
      assert.match(r.text, /Successfully built/);
      assert.equal(r.headers.get("x-request-id"), `logs-${q.length}`, `logs${q}`);
    }
  });

  test("the shell WebSocket's 101 carries X-Request-Id", async () => {
    const id = await created();
    const ws = new WebSocket(
      `${srv.url.replace("http", "ws")}/v1/sandboxes/${id}/shell-ws`,
      [SHELL_WS_PROTOCOL],
      {
        headers: { "x-api-key": keys.alice!, "x-request-id": "shell-ws-1" },
      },
    );
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      ws.once("upgrade", resolve);
      ws.once("unexpected-response", (_q, r: IncomingMessage) => reject(new Error(`HTTP ${r.statusCode}`)));
      ws.once("error", reject);
    });
    ws.terminate();
    assert.equal(res.headers["x-request-id"], "shell-ws-1");
  });

  test("exec's env may only override declared keys, prototype names included", async () => {
    const id = await created({ envs: { A: "1" } });
    const exec = (env: Record<string, string>) =>
      req("POST", `/v1/sandboxes/${id}/exec`, { cmd: "echo-stdin", env });
    assert.equal((await exec({ A: "2" })).status, 200);
    // As JSON text: an object literal's `__proto__` would set the prototype, not a key.
    for (const env of [
      '{"B":"1"}',
      '{"constructor":"1","toString":"2"}',
      '{"__proto__":"x"}',
      '{"hasOwnProperty":"1"}',
    ]) {
      const r = await call(srv.url, "POST", `/v1/sandboxes/${id}/exec`, {
        key: keys.alice!,
        raw: `{"cmd":"echo-stdin","env":${env}}`,
        headers: { "content-type": "application/json" },
      });
      assert.equal(r.status, 400, `${env}: ${r.text}`);
      assert.match(r.json.data.env, /undeclared env key/);
    }
  });

  test("GET /v1/hosts: a tenant gets readyz's ids and words; the admin the address and the error", async () => {
    // A daemon the control plane cannot reach, known by its URL alone.
    const unreachable = {
      info: async () => {
        throw new Error("connect ECONNREFUSED 10.9.8.7:7070 /run/csb/hostd.sock");
      },
    } as unknown as HostDaemon;
    void srv.attachHost(unreachable, "https://hostd-internal.corp:7070");
    const hosts = async (who: string) => {
      for (let i = 0; i < 100; i++) {
        const r = await req("GET", "/v1/hosts", undefined, who);
        assert.equal(r.status, 200, r.text);
        const bad = r.json.data.data[1];
        if (bad?.not_ready_reason?.includes("connect")) return r;
        await sleep(50);
      }
      assert.fail("the unreachable host never showed its reason");
    };
    const mine = await hosts("alice");
    assert.doesNotMatch(mine.text, HOST_WORDS);
    assert.deepEqual(
      mine.json.data.data.map((h: { id: string; not_ready_reason?: string }) => [h.id, h.not_ready_reason]),
      [
        ["scripted", undefined],
        ["host 2", "connecting to the host daemon"],
      ],
    );
    const op = await hosts("admin");
    assert.equal(op.json.data.data[1].id, "https://hostd-internal.corp:7070");
    assert.match(op.json.data.data[1].not_ready_reason, /ECONNREFUSED 10\.9\.8\.7:7070/);
  });

  test("a create the host refuses: a clean 503, the failed row says the same, a retry of the name works", async () => {
    failOnce("create", new HostdError("capacity", MEMORY));
    const body = { shape: "s-1vcpu-256mb", rootfs: "debian:12", name: "retry-me" };
    const r = await req("POST", "/v1/sandboxes", body);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.message, "no host capacity: not enough free memory on this host to create a sandbox");
    const list = await req("GET", "/v1/sandboxes");
    const failed = list.json.data.data.filter((x: { name: string }) => x.name === "retry-me");
    // Intent before action: the row was recorded before the host refused (docs/errors.md).
    assert.deepEqual(
      failed.map((x: { status: string; status_reason: string }) => [x.status, x.status_reason]),
      [["failed", r.json.message]],
    );
    assert.doesNotMatch(list.text, HOST_WORDS);
    const again = await req("POST", "/v1/sandboxes", body);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.data.name, "retry-me");
  });

  test("pause, resume and fork failures keep the host's words out of status_reason", async () => {
    const id = await created();
    failOnce("pause", new HostdError("unreachable", "connect ECONNREFUSED /run/csb/hostd.sock"));
    assert.equal((await req("POST", `/v1/sandboxes/${id}/pause`)).status, 202);
    const p = await settled(`/v1/sandboxes/${id}`, ["pausing"]);
    assert.equal(p.status_reason, "pause failed: no usable host: the sandbox's host did not answer");
    assert.equal((await req("POST", `/v1/sandboxes/${id}/pause`)).status, 202);
    assert.equal((await settled(`/v1/sandboxes/${id}`, ["running", "pausing"])).status, "paused");
    const f = await (async () => {
      failOnce("fork", new HostdError("capacity", MEMORY));
      return req("POST", `/v1/sandboxes/${id}/fork`, {});
    })();
    assert.equal(f.status, 503, f.text);
    const child = (await req("GET", "/v1/sandboxes")).json.data.data.find(
      (x: { forked_from?: string }) => x.forked_from === id,
    );
    assert.equal(child.status, "failed");
    assert.equal(child.status_reason, f.json.message);
    failOnce("resume", new HostdError("capacity", MEMORY));
    assert.equal((await req("POST", `/v1/sandboxes/${id}/resume`)).status, 202);
    const r = await settled(`/v1/sandboxes/${id}`, ["resuming"]);
    assert.equal(r.status, "error");
    assert.equal(
      r.status_reason,
      "resume failed: no host capacity: not enough free memory on this host to create a sandbox",
    );
    assert.doesNotMatch((await req("GET", "/v1/sandboxes")).text, HOST_WORDS);
  });

  test("a template build the host refuses: the reason and the log say the catalog's words", async () => {
    failOnce("create", new HostdError("capacity", MEMORY));
    const t = await req("POST", "/v1/templates", {
      name: "refused",
      dockerfile: "FROM nodeops/sandbox:debian\n",
    });
    assert.equal(t.status, 200, t.text);
    const id = t.json.data.id;
    const done = await settled(`/v1/templates/${id}`, ["pending", "building"]);
    assert.equal(done.status, "failed");
    assert.equal(
      done.status_reason,
      "build failed: no host capacity: not enough free memory on this host to create a sandbox",
    );
    const log = await req("GET", `/v1/templates/${id}/logs`);
    assert.match(log.text, /build failed: no host capacity/);
    assert.doesNotMatch(log.text, HOST_WORDS);
  });
});
