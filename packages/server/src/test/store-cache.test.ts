/**
 * The store's row and page cache (store/cache.ts) never answers what the database no longer says (for another
 * connection's commits: from 1 ms after them).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServerConfig } from "../config.js";
import { createRow } from "../rows.js";
import { SqliteStore } from "../store/sqlite.js";
import type { SandboxRow } from "../store/types.js";
import { newSandboxId } from "../ulid.js";
import { page, pageJson, sandboxPageJson, sandboxView, sandboxViewJson } from "../views.js";

const dir = mkdtempSync(join(tmpdir(), "csb-cache-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function fresh(): Promise<{ store: SqliteStore; path: string; user: string }> {
  const path = join(dir, `db${++n}.sqlite`);
  const store = SqliteStore.open(path);
  return { store, path, user: (await store.createUser("u")).id };
}

function row(user: string, name: string, extra: Partial<SandboxRow> = {}): SandboxRow {
  const input = { shape: "s-1vcpu-256mb", vcpu: 1, mem_mib: 256, disk_mib: 10240, rootfs: "devbox:1" };
  const ids = { id: newSandboxId(), userId: user, createdBy: user, name, hostId: "local" };
  const base = { ...input, envs: { A: "1" }, egress: [], ssh_pubkeys: [], ingress_enabled: false };
  return { ...createRow({ ...base, network_ids: [] }, ids, "local"), status: "running", ...extra };
}

test("every kind of write is seen by the next read of the row", async () => {
  const { store, user } = await fresh();
  const r = row(user, "a", { auto_pause_after_seconds: 60 });
  await store.insertSandbox(r);
  assert.equal((await store.getSandbox(r.id))!.status, "running");
  await store.updateSandbox(r.id, { bandwidth_used_bytes: 7 });
  assert.equal((await store.getSandbox(r.id))!.bandwidth_used_bytes, 7);
  assert.equal(await store.transition(r.id, ["paused"], { status: "resuming" }), false);
  assert.equal((await store.getSandbox(r.id))!.status, "running");
  assert.equal(await store.transition(r.id, ["running"], { status: "pausing" }), true);
  assert.equal((await store.getSandbox(r.id))!.status, "pausing");
  const later = r.last_activity_at + 5000;
  await store.touchActivity(r.id, later);
  assert.equal((await store.getSandbox(r.id))!.last_activity_at, later);
  await store.updateSandbox(r.id, { clear: ["auto_pause_after_seconds"] });
  assert.equal((await store.getSandbox(r.id))!.auto_pause_after_seconds, undefined);
  await store.close();
});

test("a write that fails leaves the row as the database has it", async () => {
  const { store, user } = await fresh();
  const a = row(user, "taken");
  const b = row(user, "free");
  await store.insertSandbox(a);
  await store.insertSandbox(b);
  await store.getSandbox(b.id);
  // The live-name index refuses it: SQLite rolls the statement back.
  await assert.rejects(store.updateSandbox(b.id, { name: "taken", bandwidth_used_bytes: 9 }));
  const got = (await store.getSandbox(b.id))!;
  assert.equal(got.name, "free");
  assert.equal(got.bandwidth_used_bytes, 0);
  await assert.rejects(store.insertSandbox({ ...a, name: "other" }));
  assert.equal((await store.getSandbox(a.id))!.name, "taken");
  await store.close();
});

test("reads inside a transaction that rolls back are not kept", async () => {
  const { store, user } = await fresh();
  const r = row(user, "t");
  await store.insertSandbox(r);
  await store.getSandbox(r.id);
  const db = (store as unknown as { db: { transaction(f: () => void): () => void } }).db;
  let inside: Promise<SandboxRow | undefined> | undefined;
  let insidePage: ReturnType<SqliteStore["listSandboxes"]> | undefined;
  assert.throws(
    db.transaction(() => {
      // The store's methods do their SQL before their first await: all of it runs inside the transaction.
      void store.updateSandbox(r.id, { status: "error" });
      inside = store.getSandbox(r.id);
      insidePage = store.listSandboxes(user, { limit: 10, offset: 0 });
      throw new Error("roll back");
    }),
    /roll back/,
  );
  assert.equal((await inside)!.status, "error");
  assert.equal((await insidePage)!.rows[0]!.status, "error");
  assert.equal((await store.getSandbox(r.id))!.status, "running");
  assert.equal((await store.listSandboxes(user, { limit: 10, offset: 0 })).rows[0]!.status, "running");
  await store.close();
});

test("pages follow inserts, updates and status filters", async () => {
  const { store, user } = await fresh();
  const q = { limit: 10, offset: 0 };
  const first = row(user, "one");
  await store.insertSandbox(first);
  assert.deepEqual(
    (await store.listSandboxes(user, q)).rows.map((r) => r.name),
    ["one"],
  );
  const second = row(user, "two");
  await store.insertSandbox(second);
  const both = await store.listSandboxes(user, q);
  assert.deepEqual(
    both.rows.map((r) => r.name),
    ["two", "one"],
  );
  assert.equal(both.total, 2);
  assert.equal((await store.listSandboxes(user, { ...q, status: "paused" })).total, 0);
  await store.transition(first.id, ["running"], { status: "paused" });
  const paused = await store.listSandboxes(user, { ...q, status: "paused" });
  assert.deepEqual(
    paused.rows.map((r) => [r.name, r.status]),
    [["one", "paused"]],
  );
  await store.updateSandbox(second.id, { egress: ["example.com:443"] });
  assert.deepEqual((await store.listSandboxes(user, q)).rows[0]!.egress, ["example.com:443"]);
  await store.close();
});

test("another connection's commits are seen: a second process on the same file", async () => {
  const { store, path, user } = await fresh();
  const r = row(user, "shared");
  await store.insertSandbox(r);
  assert.equal((await store.getSandbox(r.id))!.status, "running");
  assert.equal((await store.listSandboxes(user, { limit: 5, offset: 0 })).total, 1);
  const other = SqliteStore.open(path);
  await other.transition(r.id, ["running"], { status: "paused" });
  await other.insertSandbox(row(user, "theirs"));
  await other.close();
  // Seen by a read that starts 1 ms or more after the commit (cache.ts LOOK_MS).
  await sleep(2);
  assert.equal((await store.getSandbox(r.id))!.status, "paused");
  const listed = await store.listSandboxes(user, { limit: 5, offset: 0 });
  assert.deepEqual(
    listed.rows.map((x) => [x.name, x.status]),
    [
      ["theirs", "running"],
      ["shared", "paused"],
    ],
  );
  await store.close();
});

test("another connection's commit between two of ours is seen", async () => {
  const { store, path, user } = await fresh();
  const mine = row(user, "mine");
  const theirs = row(user, "theirs");
  await store.insertSandbox(mine);
  await store.insertSandbox(theirs);
  assert.equal((await store.getSandbox(theirs.id))!.status, "running");
  const other = SqliteStore.open(path);
  await other.transition(theirs.id, ["running"], { status: "paused" });
  await other.close();
  await sleep(2);
  // Our next commit rewrites the WAL index again: it must not be taken as the only change since the last look.
  await store.updateSandbox(mine.id, { bandwidth_used_bytes: 1 });
  assert.equal((await store.getSandbox(theirs.id))!.status, "paused");
  await store.close();
});

test("rows and pages handed out are frozen; view texts are those of JSON.stringify", async () => {
  const { store, user } = await fresh();
  const r = row(user, "frozen", { egress: ["a.example:80"], ingress_enabled: true });
  await store.insertSandbox(r);
  const got = (await store.getSandbox(r.id))!;
  assert.throws(() => {
    (got as { status: string }).status = "paused";
  }, TypeError);
  assert.throws(() => (got.egress as string[]).push("b.example"), TypeError);
  const p = await store.listSandboxes(user, { limit: 5, offset: 0 });
  assert.throws(() => (p.rows as SandboxRow[]).pop(), TypeError);
  const cfg = { ingressDomain: "sb.example" } as ServerConfig;
  assert.equal(sandboxViewJson(got, cfg), JSON.stringify(sandboxView(got, cfg)));
  assert.equal(
    pageJson(
      p.rows.map((x) => sandboxViewJson(x, cfg)),
      p.total,
      5,
      0,
    ),
    JSON.stringify(
      page(
        p.rows.map((x) => sandboxView(x, cfg)),
        p.total,
        5,
        0,
      ),
    ),
  );
  const pageText = JSON.stringify(
    page(
      p.rows.map((x) => sandboxView(x, cfg)),
      p.total,
      5,
      0,
    ),
  );
  assert.equal(sandboxPageJson(p, 5, 0, cfg), pageText);
  assert.equal(sandboxPageJson(p, 5, 0, cfg), pageText);
  await store.updateSandbox(r.id, { status_reason: "why" });
  const next = await store.listSandboxes(user, { limit: 5, offset: 0 });
  assert.match(sandboxPageJson(next, 5, 0, cfg), /"status_reason":"why"/);
  const after = (await store.getSandbox(r.id))!;
  assert.match(sandboxViewJson(after, cfg), /"status_reason":"why"/);
  await store.close();
});
