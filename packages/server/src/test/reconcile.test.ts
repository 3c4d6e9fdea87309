/**
 * Restart reconciliation against a scripted host daemon, both ways: work the API accepted is finished by
 * the ids recorded before it (a pause the host already made, a paused fork's snapshot), a paused row whose
 * snapshot the host lost says so, and a snapshot no row claims is deleted. Then runtime calls on a sandbox
 * that is becoming running wait for it, and a paused one is refused with a hint.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import type { SnapshotRef } from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { createRow } from "../rows.js";
import { SqliteStore } from "../store/sqlite.js";
import type { SandboxRow, SandboxStatus } from "../store/types.js";
import { newSandboxId } from "../ulid.js";
import { EPHEMERAL_EDGE, call } from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const [id_lost, id_pausing, id_child, id_parent, id_resuming, id_nobody] = [1, 2, 3, 4, 5, 6].map(() =>
  newSandboxId(),
) as [string, string, string, string, string, string];
const dataDir = mkdtempSync(join(tmpdir(), "csb-reconcile-"));
let srv: RunningServer | undefined;
after(async () => {
  await srv?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const ref = (id: string, sandbox: string): SnapshotRef => ({
  snapshot_id: id,
  sandbox_id: sandbox,
  mem_mib: 256,
  vcpu: 1,
  disk_mib: 1024,
  image: "debian:12",
  size_bytes: 1,
  pause_ms: 1,
});

test("reconcile finishes accepted work by its recorded ids and matches snapshots both ways", async () => {
  const store = SqliteStore.open(join(dataDir, "db.sqlite"));
  const user = await store.createUser("alice");
  const key = `skp_${"a".repeat(32)}`;
  await store.addApiKey(user.id, key);
  const input = {
    shape: "s-1vcpu-256mb",
    vcpu: 1,
    mem_mib: 256,
    disk_mib: 1024,
    rootfs: "debian:12",
    envs: {},
    egress: [],
    ssh_pubkeys: [],
    ingress_enabled: false,
    network_ids: [],
  };
  const row = async (id: string, status: SandboxStatus, extra: Partial<SandboxRow> = {}) => {
    const r = createRow(
      input,
      { id, userId: user.id, createdBy: user.id, name: id, hostId: "scripted" },
      "local",
    );
    await store.insertSandbox({ ...r, status, ...extra });
  };
  const daemon = new ScriptedDaemon();
  // Paused, but the host no longer has its snapshot.
  await row(id_lost, "paused", { snapshot: ref("snap-gone", id_lost) });
  // A pause the host finished (snapshot made under the recorded id) before the control plane recorded it.
  daemon.snaps.set("snap-made", ref("snap-made", id_pausing));
  await row(id_pausing, "pausing", { pending_snapshot_id: "snap-made" });
  // A paused fork whose snapshot the host made; the child row never heard back.
  daemon.snaps.set("snap-child", ref("snap-child", id_child));
  await row(id_parent, "paused", { snapshot: ref("snap-parent", id_parent) });
  daemon.snaps.set("snap-parent", ref("snap-parent", id_parent));
  await row(id_child, "forking", { forked_from: id_parent, pending_snapshot_id: "snap-child" });
  // An accepted resume whose snapshot is intact: redone.
  daemon.snaps.set("snap-r", ref("snap-r", id_resuming));
  await row(id_resuming, "resuming", { snapshot: ref("snap-r", id_resuming) });
  // A snapshot no row names.
  daemon.snaps.set("snap-orphan", ref("snap-orphan", id_nobody));

  const cfg = loadConfig({ dataDir, port: 0 }, { ...EPHEMERAL_EDGE });
  srv = await startServer(
    cfg,
    createLogger(() => undefined),
    store,
  );
  await srv.attachHost(daemon);
  const status = async (id: string) => (await store.getSandbox(id))!;
  for (let i = 0; i < 100 && (await status(id_resuming)).status !== "running"; i++) await sleep(20);

  const lost = await status(id_lost);
  assert.equal(lost.status, "error");
  assert.match(lost.status_reason ?? "", /no longer on the host/);
  const view = await call(srv.url, "GET", `/v1/sandboxes/${id_lost}`, { key });
  assert.match(
    view.json?.data?.status_reason ?? "",
    /no longer on the host/,
    `the reason is in the view: ${view.text}`,
  );
  const paused = await status(id_pausing);
  assert.equal(paused.status, "paused");
  assert.equal(paused.snapshot?.snapshot_id, "snap-made");
  assert.equal(paused.pending_snapshot_id, undefined);
  const child = await status(id_child);
  assert.equal(child.status, "paused");
  assert.equal(child.snapshot?.snapshot_id, "snap-child");
  assert.equal((await status(id_resuming)).status, "running");
  assert.ok(daemon.vms.has(id_resuming));
  assert.deepEqual(
    daemon.calls
      .filter((c) => c.method === "deleteSnapshot")
      .map((c) => (c.args[0] as SnapshotRef).snapshot_id),
    ["snap-orphan"],
  );
  assert.ok(!daemon.snaps.has("snap-orphan"));
  assert.equal(
    daemon.calls.filter((c) => c.method === "fork").length,
    0,
    "a fork already made is not redone",
  );

  // Runtime calls wait for a sandbox becoming running, and refuse a paused one with a hint.
  await store.transition(id_resuming, ["running"], { status: "pausing" });
  await store.transition(id_resuming, ["pausing"], { status: "paused" });
  await store.transition(id_resuming, ["paused"], { status: "resuming" });
  setTimeout(() => void store.transition(id_resuming, ["resuming"], { status: "running" }), 400);
  const t0 = Date.now();
  const r = await call(srv.url, "POST", `/v1/sandboxes/${id_resuming}/exec`, { key, body: { cmd: "fail" } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.data.result.exit_code, 3);
  assert.ok(Date.now() - t0 >= 350, "the exec waited for running");
  const refused = await call(srv.url, "GET", `/v1/sandboxes/${id_parent}/files?path=/x`, { key });
  assert.equal(refused.status, 409);
  assert.match(refused.text, /paused sandbox; resume it first/);
  const gone = await call(srv.url, "POST", `/v1/sandboxes/${id_lost}/exec`, { key, body: { cmd: "fail" } });
  assert.equal(gone.status, 409);
  assert.match(gone.text, /that is error/);
});
