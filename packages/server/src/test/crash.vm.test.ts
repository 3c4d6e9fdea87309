/**
 * kill -9 of the server in the middle of a create and of a pause, then a restart on the same data dir:
 * every row ends in a settled state that matches the host, nothing is lost, no VM is orphaned.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, call, cleanup } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";
const SETTLED = ["running", "paused", "failed", "error", "destroyed"];

let s: ServerProc | undefined;
let dataDir: string | undefined;
let key = "";

after(async () => {
  if (s) {
    await destroyAll(s, [key]);
    await s.stop();
  }
  if (dataDir) cleanup(dataDir);
});

async function restart(): Promise<ServerProc> {
  await s!.stop("SIGKILL");
  s = await startEngineServer({}, dataDir);
  return s;
}

async function settle(id: string): Promise<{ status: string }> {
  for (let i = 0; i < 120; i++) {
    const r = await call(s!.url, "GET", `/v1/sandboxes/${id}`, { key });
    assert.equal(r.status, 200, `row ${id} lost: ${r.text}`);
    if (SETTLED.includes(r.json.data.status)) return r.json.data;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`${id} never settled`);
}

async function vmCount(): Promise<number> {
  const h = await call(s!.url, "GET", "/v1/hosts", { key });
  return h.json.data.data[0].vm_count;
}

async function runningCount(): Promise<number> {
  const l = await call(s!.url, "GET", "/v1/sandboxes?status=running&limit=500", { key });
  return l.json.data.pagination.total;
}

test(
  "kill -9 mid-create and mid-pause, restart: nothing lost or orphaned",
  { timeout: 30 * 60_000 },
  async (t) => {
    s = await startEngineServer();
    dataDir = s.dataDir;
    key = s.adminKey;

    // A settled sandbox that must survive the crashes untouched.
    const keep = await call(s.url, "POST", "/v1/sandboxes", { key, body: { shape: SHAPE, name: "keeper" } });
    assert.equal(keep.status, 200, keep.text);
    const keepId = keep.json.data.id as string;
    await call(s.url, "PUT", `/v1/sandboxes/${keepId}/files?path=/root/marker`, {
      key,
      raw: "still here",
      headers: { "content-type": "application/octet-stream" },
    });

    // 1. Crash while a create is in flight (the row is `creating`, the engine is booting the VM).
    const inflight = fetch(`${s.url}/v1/sandboxes`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body: JSON.stringify({ shape: SHAPE, name: "mid-create" }),
    }).catch(() => undefined);
    let createdId: string | undefined;
    for (let i = 0; i < 200 && !createdId; i++) {
      const l = await call(s.url, "GET", "/v1/sandboxes?status=creating", { key });
      createdId = l.json.data.data[0]?.id;
      if (!createdId) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(createdId, "saw the row in creating");
    await restart();
    await inflight;
    const c = await settle(createdId!);
    t.diagnostic(`mid-create row settled as ${c.status}`);
    assert.ok(["running", "failed"].includes(c.status), `mid-create row settled as ${c.status}`);
    assert.equal(await vmCount(), await runningCount(), "every VM belongs to a running row and vice versa");
    if (c.status === "running") {
      const r = await call(s.url, "POST", `/v1/sandboxes/${createdId}/exec`, { key, body: { cmd: "true" } });
      assert.equal(r.json.data.result.exit_code, 0);
    }

    // 2. Crash right after a pause was accepted (row `pausing`, snapshot being written).
    const p = await call(s.url, "POST", `/v1/sandboxes/${keepId}/pause`, { key });
    assert.equal(p.status, 202);
    await restart();
    const k = await settle(keepId);
    t.diagnostic(`mid-pause row settled as ${k.status}`);
    assert.ok(["running", "paused"].includes(k.status), `mid-pause row settled as ${k.status}`);
    if (k.status === "paused") {
      await call(s.url, "POST", `/v1/sandboxes/${keepId}/resume`, { key });
      assert.equal((await settle(keepId)).status, "running");
    }
    const marker = await call(s.url, "GET", `/v1/sandboxes/${keepId}/files?path=/root/marker`, { key });
    assert.equal(marker.text, "still here", "the sandbox's disk survived both crashes");
    assert.equal(await vmCount(), await runningCount(), "no orphaned VM, no running row without a VM");
  },
);
