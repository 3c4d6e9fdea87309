/**
 * Per-tenant limits (sandboxes of any live status, sum of disk_mib, snapshot bytes) and the per-sandbox
 * disk_mib maximum, through the HTTP API of an in-process control plane over a scripted host daemon.
 * Each tenant exercises one limit, so they do not mask each other. The running limit on real VMs is
 * limits.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { HostdError } from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { EPHEMERAL_EDGE, attachReady, call } from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("per-tenant limits", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-limits-"));
  const daemon = new ScriptedDaemon();
  let srv: RunningServer;
  const keys: Record<string, string> = {};

  before(async () => {
    const cfg = loadConfig(
      { dataDir, port: 0 },
      {
        ...EPHEMERAL_EDGE,
        CREATEOS_SANDBOX_MAX_SANDBOXES_PER_TENANT: "4",
        CREATEOS_SANDBOX_MAX_DISK_MIB_PER_TENANT: "5000",
        // The scripted daemon's snapshots are 1 byte each.
        CREATEOS_SANDBOX_MAX_SNAPSHOT_BYTES_PER_TENANT: "2",
        CREATEOS_SANDBOX_MAX_DISK_MIB: "4096",
      },
    );
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    for (const name of ["alice", "bob", "carol", "dave"]) {
      const user = await store.createUser(name);
      keys[name] = `skp_${name[0]!.repeat(32)}`;
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

  const create = (who: string, disk_mib: number) =>
    call(srv.url, "POST", "/v1/sandboxes", {
      key: keys[who]!,
      body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", disk_mib },
    });
  const post = (who: string, path: string, body: unknown = {}) =>
    call(srv.url, "POST", path, { key: keys[who]!, body });
  const created = async (who: string, disk_mib = 1024): Promise<string> => {
    const r = await create(who, disk_mib);
    assert.equal(r.status, 200, r.text);
    return r.json.data.id;
  };
  const paused = async (who: string, id: string): Promise<void> => {
    const r = await post(who, `/v1/sandboxes/${id}/pause`);
    assert.equal(r.status, 202, r.text);
    for (let i = 0; i < 100; i++) {
      const g = await call(srv.url, "GET", `/v1/sandboxes/${id}`, { key: keys[who]! });
      if (g.json.data.status === "paused") return;
      await sleep(50);
    }
    assert.fail(`${id} never paused`);
  };
  const refused = (r: { status: number; json: { data: Record<string, string> } }, re: RegExp) => {
    assert.equal(r.status, 403, JSON.stringify(r.json));
    assert.match(r.json.data.limit!, re);
  };

  test("disk_mib above CREATEOS_SANDBOX_MAX_DISK_MIB is a field-level 400 (create and resize)", async () => {
    const r = await create("bob", 8192);
    assert.equal(r.status, 400, r.text);
    assert.match(r.json.data.disk_mib, /between 0 and 4096/);
    const id = await created("bob", 1024);
    const g = await post("bob", `/v1/sandboxes/${id}/resize`, { disk_mib: 4097 });
    assert.equal(g.status, 400, g.text);
    assert.match(g.json.data.disk_mib, /between 1 and 4096/);
    assert.equal((await call(srv.url, "DELETE", `/v1/sandboxes/${id}`, { key: keys.bob! })).status, 200);
  });

  test("sandboxes: paused ones count, a start_paused fork counts, a destroy frees a slot", async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await created("alice"));
    refused(await create("alice", 1024), /limit_sandboxes = 4/);
    await paused("alice", ids[0]!);
    refused(await create("alice", 1024), /limit_sandboxes = 4, paused ones included/);
    refused(await post("alice", `/v1/sandboxes/${ids[0]}/fork`, { start_paused: true }), /limit_sandboxes/);
    assert.equal(
      (await call(srv.url, "DELETE", `/v1/sandboxes/${ids[1]}`, { key: keys.alice! })).status,
      200,
    );
    for (let i = 0; (await create("alice", 1024)).status !== 200; i++) {
      // The destroy completes in the background; until then the row is `destroying` and still counts.
      assert.ok(i < 100, "create never succeeded after the destroy");
      await sleep(50);
    }
  });

  test("disk: the sum of disk_mib over create and resize", async () => {
    const a = await created("bob", 2048);
    await created("bob", 2048);
    refused(await create("bob", 2048), /limit_disk = 5000 MiB per tenant, 4096 MiB in use, 2048 MiB asked/);
    refused(await post("bob", `/v1/sandboxes/${a}/resize`, { disk_mib: 3000 }), /limit_disk = 5000/);
    const ok = await post("bob", `/v1/sandboxes/${a}/resize`, { disk_mib: 2900 });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.data.disk_mib, 2900);
  });

  test("snapshot bytes: pause and start_paused fork refused once reached; a running fork is not", async () => {
    const [x, y, z] = [await created("carol"), await created("carol"), await created("carol")];
    await paused("carol", x);
    await paused("carol", y);
    refused(
      await post("carol", `/v1/sandboxes/${z}/pause`),
      /limit_snapshot_bytes = 2 bytes per tenant, 2 in use/,
    );
    refused(await post("carol", `/v1/sandboxes/${x}/fork`, { start_paused: true }), /limit_snapshot_bytes/);
    const g = await call(srv.url, "GET", `/v1/sandboxes/${z}`, { key: keys.carol! });
    assert.equal(g.json.data.status, "running");
    const f = await post("carol", `/v1/sandboxes/${x}/fork`, { start_paused: false });
    assert.equal(f.status, 200, f.text);
    assert.equal(f.json.data.status, "running");
  });

  test("a host below its free-disk reserve: 503 with Retry-After and the host's words, nothing kept", async () => {
    const create0 = daemon.create.bind(daemon);
    daemon.create = async () => {
      throw new HostdError("capacity", "not enough free disk on this host to create a sandbox: 1 MiB free");
    };
    try {
      const r = await create("dave", 1024);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.headers.get("retry-after"), "5");
      assert.match(r.json.message, /no host capacity: not enough free disk on this host to create a sandbox/);
    } finally {
      daemon.create = create0;
    }
    const list = await call(srv.url, "GET", "/v1/sandboxes", { key: keys.dave! });
    // The refused create is recorded `failed`, which holds nothing and counts against no limit.
    assert.deepEqual(
      list.json.data.data.map((x: { status: string }) => x.status),
      ["failed"],
    );
  });
});
