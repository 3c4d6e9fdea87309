import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type ExecEvents, type ExecRequest, type HostDaemon, HostdError } from "@createos-sandbox/protocol";
import Database from "better-sqlite3";
import type { HostRef } from "../hosts.js";
import type { Logger } from "../log.js";
import type { SandboxRow } from "../store/types.js";
import { DockerfileError } from "./dockerfile.js";
import { type FollowEvent, INTERRUPTED, Templates, templateSettings } from "./service.js";
import { NO_OWNER, TemplateStore } from "./store.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A host whose execs run a script: `exit N` fails with N, `block` waits until released. */
function fakeHost() {
  const calls: { method: string; args: unknown[] }[] = [];
  let release: () => void = () => {};
  const blocked = new Promise<void>((r) => {
    release = r;
  });
  const daemon = {
    create: async (spec: unknown) => {
      calls.push({ method: "create", args: [spec] });
      return { sandbox_id: "x", ip: "", spawn_ms: 1, boot: "cold" };
    },
    exec: async (id: string, req: ExecRequest, ev?: ExecEvents) => {
      calls.push({ method: "exec", args: [id, req] });
      const script = req.argv.at(-1)!;
      if (script === "block") await blocked;
      ev?.onStdout?.(Buffer.from(`out of ${script}\npartial`));
      ev?.onStderr?.(Buffer.from("err line\n"));
      const m = /exit (\d+)/.exec(script);
      return { exit_code: m ? Number(m[1]) : 0, exec_ms: 1 };
    },
    commitImage: async (id: string, image: string, opts?: { keep?: boolean }) => {
      calls.push({ method: "commitImage", args: opts ? [id, image, opts] : [id, image] });
      return { image, size_bytes: 4096 };
    },
    destroy: async (id: string) => {
      calls.push({ method: "destroy", args: [id] });
    },
    deleteImage: async (image: string) => {
      calls.push({ method: "deleteImage", args: [image] });
    },
  } as unknown as HostDaemon;
  const hosts = { place: () => ({ id: "h1", daemon }) as unknown as HostRef, daemonOf: () => daemon };
  return { calls, hosts, release };
}

const quiet: Logger = { info() {}, warn() {}, error() {}, now() {} } as unknown as Logger;

function open(hosts: ReturnType<typeof fakeHost>["hosts"], dir?: string, live: { rootfs: string }[] = []) {
  const d = dir ?? mkdtempSync(join(tmpdir(), "csb-tpl-"));
  if (!dir) dirs.push(d);
  const settings = { ...templateSettings({}), buildsPerUser: 2 };
  return {
    dir: d,
    t: new Templates(new TemplateStore(d), hosts, quiet, settings, {
      sandboxesInStatus: async () => live as SandboxRow[],
    }),
  };
}

function finished(t: Templates, id: string): Promise<{ frames: FollowEvent[]; status: string }> {
  const frames: FollowEvent[] = [];
  return new Promise((resolve) => {
    t.follow(id, (e) => {
      frames.push(e);
      if ("final" in e) resolve({ frames, status: e.status });
    });
  });
}

test("a build runs each RUN with its ENV/WORKDIR/USER, logs every line and step, commits the disk", async () => {
  const h = fakeHost();
  const { t } = open(h.hosts);
  const row = t.submit(
    "u1",
    "web",
    "FROM nodeops/sandbox:debian\nENV A=1\nWORKDIR /app\nRUN one\nUSER nobody\nRUN two\n",
  );
  assert.equal(row.status, "pending");
  const { frames, status } = await finished(t, row.id);
  assert.equal(status, "ready");
  // the first frames are written before anyone can follow: the route replays the file first
  const lines = t.store.readLog(row.id).map((f) => f.line);
  const followed = frames.flatMap((f) => ("line" in f ? [f.line] : []));
  assert.deepEqual(followed, lines.slice(lines.length - followed.length), "followers get the rest, in order");
  assert.deepEqual(lines.slice(0, 7), [
    "Step 1/3 : FROM nodeops/sandbox:debian",
    lines[1],
    "Step 2/3 : RUN one",
    "out of one",
    "err line",
    "partial",
    lines[6],
  ]);
  assert.match(lines[1]!, /^ ---> builder VM up in \d+ ms$/);
  assert.match(lines[6]!, /^ ---> exit code 0 in [\d.]+ s$/);
  assert.equal(lines.at(-1), `Successfully built ${row.id} (4096 bytes)`);
  const execs = h.calls.filter((c) => c.method === "exec").map((c) => c.args[1] as ExecRequest);
  const run = execs.filter((e) => e.argv[0] !== "mkdir");
  assert.deepEqual(run[0], { argv: ["/bin/sh", "-c", "one"], env: { A: "1" }, cwd: "/app" });
  assert.deepEqual(run[1]!.argv, ["runuser", "-u", "nobody", "--", "/bin/sh", "-c", "two"]);
  assert.ok(
    execs.some((e) => e.argv.join(" ") === "mkdir -p /app"),
    "WORKDIR is created",
  );
  assert.deepEqual(h.calls.at(-1), { method: "commitImage", args: [`tb-${row.id.slice(4)}`, row.id] });
  const done = t.store.get(row.id)!;
  assert.equal(done.ext4_size_bytes, 4096);
  assert.ok(done.built_at);
  assert.deepEqual(t.execDefaults(row.id), { cwd: "/app", user: "nobody" });
  assert.equal(t.resolve("u1", "web")?.id, row.id);
  assert.equal(t.resolve("u2", "web"), undefined, "another tenant's name is not found");
});

test("a rebuild that changes the last step re-runs only that step, from the cached layer before it", async () => {
  const h = fakeHost();
  const { t } = open(h.hosts);
  const first = t.submit("u1", "c", "FROM nodeops/sandbox:debian\nRUN one\nRUN two\nRUN three\n");
  assert.equal((await finished(t, first.id)).status, "ready");
  const layers = h.calls.filter((c) => c.method === "commitImage" && c.args[2]);
  assert.equal(layers.length, 3, "a layer after each step");
  h.calls.length = 0;
  const second = t.submit("u1", "c", "FROM nodeops/sandbox:debian\nRUN one\nRUN two\nRUN changed\n");
  assert.equal((await finished(t, second.id)).status, "ready");
  const booted = h.calls.find((c) => c.method === "create")!.args[0] as { image: string };
  assert.equal(booted.image, (layers[1]!.args as string[])[1], "boots the layer after step two");
  const ran = h.calls.filter((c) => c.method === "exec").map((c) => (c.args[1] as ExecRequest).argv.at(-1));
  assert.deepEqual(ran, ["changed"]);
  const text = t.store.readLog(second.id).map((f) => f.line);
  assert.equal(text.filter((l) => l === " ---> Using cache").length, 2);
  assert.equal(t.resolve("u1", "c")?.id, second.id, "the name resolves to the newest ready build");
});

test("the first failing RUN fails the build with its exit code; later steps never run", async () => {
  const h = fakeHost();
  const { t } = open(h.hosts);
  const row = t.submit("u1", "bad", "FROM nodeops/sandbox:debian\nRUN fine\nRUN exit 7\nRUN never\n");
  const { frames, status } = await finished(t, row.id);
  assert.equal(status, "failed");
  const last = frames.at(-2) as { line: string; level: string };
  assert.equal(last.level, "error");
  assert.match(last.line, /^Step 3\/4 : RUN exit 7: failed with exit code 7 after/);
  assert.ok(!h.calls.some((c) => c.method === "exec" && JSON.stringify(c.args).includes("never")));
  assert.ok(
    h.calls.some((c) => c.method === "destroy"),
    "the builder is destroyed",
  );
  const commits = h.calls.filter((c) => c.method === "commitImage").map((c) => c.args.slice(2));
  assert.deepEqual(commits, [[{ keep: true }]], "the step that passed is a layer; no template image");
  assert.equal(t.resolve("u1", "bad"), undefined);
});

test("a third concurrent build of one user is refused; builds in flight at a restart end failed", async () => {
  const h = fakeHost();
  const { t, dir } = open(h.hosts);
  const df = "FROM nodeops/sandbox:debian\nRUN block\n";
  const a = t.submit("u1", "a", df);
  t.submit("u1", "b", df);
  assert.throws(
    () => t.submit("u1", "c", df),
    (e: { code?: string; retryAfter?: number }) => e.code === "template_builds_busy",
  );
  t.submit("u2", "a", df); // the limit is per user
  assert.throws(() => t.submit("u1", "c", "FROM debian:12\n"), DockerfileError, "rules come first");
  const t2 = open(h.hosts, dir).t;
  const row = t2.store.get(a.id)!;
  assert.equal(row.status, "failed");
  assert.equal(row.status_reason, INTERRUPTED);
  assert.match(t2.store.readLog(a.id).at(-1)!.line, /interrupted by a server restart/);
  h.release();
});

test("a deleted template's image leaves its host once no live sandbox uses it", async () => {
  const h = fakeHost();
  const live: { rootfs: string }[] = [];
  const { t } = open(h.hosts, undefined, live);
  const row = t.submit("u1", "g", "FROM nodeops/sandbox:debian\nRUN one\n");
  await finished(t, row.id);
  live.push({ rootfs: row.id });
  t.delete(row);
  await t.gcImages();
  assert.equal(t.resolve("u1", row.id), undefined, "new creates refuse it");
  assert.ok(!h.calls.some((c) => c.method === "deleteImage"), "a sandbox still uses it");
  live.length = 0;
  await t.gcImages();
  assert.deepEqual(
    h.calls.filter((c) => c.method === "deleteImage"),
    [{ method: "deleteImage", args: [row.id] }],
  );
  assert.equal(t.store.get(row.id)!.image_gone, 1);
});

test("a deleted template's image goes when its build ends, or when its last sandbox is destroyed", async () => {
  const h = fakeHost();
  const live: { rootfs: string }[] = [];
  const { t } = open(h.hosts, undefined, live);
  const deletes = () => h.calls.filter((c) => c.method === "deleteImage").map((c) => c.args[0]);
  const settle = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  };
  // deleted while building: nothing to collect yet; the image the build then makes is collected
  const building = t.submit("u1", "b", "FROM nodeops/sandbox:debian\nRUN block\n");
  await settle();
  t.delete(t.store.get(building.id)!);
  h.release();
  assert.equal((await finished(t, building.id)).status, "ready");
  await settle();
  assert.ok(deletes().includes(building.id), "the image of a template deleted mid-build");
  // deleted while a sandbox runs from it: collected once that sandbox is destroyed
  const row = t.submit("u1", "g", "FROM nodeops/sandbox:debian\nRUN one\n");
  await finished(t, row.id);
  live.push({ rootfs: row.id });
  t.delete(t.store.get(row.id)!);
  await settle();
  assert.ok(!deletes().includes(row.id), "a sandbox still uses it");
  live.length = 0;
  t.sandboxEnded("tpl_not_a_deleted_one");
  await settle();
  assert.ok(!deletes().includes(row.id), "another sandbox's end");
  t.sandboxEnded(row.id);
  await settle();
  assert.ok(deletes().includes(row.id), "its last sandbox's end");
});

test("the step-layer cache keeps the most recently used layers per host and deletes the rest", async () => {
  const h = fakeHost();
  const d = mkdtempSync(join(tmpdir(), "csb-tpl-"));
  dirs.push(d);
  const store = new TemplateStore(d);
  const t = new Templates(store, h.hosts, quiet, { ...templateSettings({}), layerCache: 2 });
  const docker = (n: number) =>
    `FROM nodeops/sandbox:debian\n${Array.from({ length: n }, (_, i) => `RUN step ${i}`).join("\n")}\n`;
  // Three steps → three layers, one over the cap: the oldest goes once the build ends.
  const a = t.submit("u1", "a", docker(3));
  assert.equal((await finished(t, a.id)).status, "ready");
  const deleted = () => h.calls.filter((c) => c.method === "deleteImage").map((c) => c.args[0]);
  await new Promise((r) => setImmediate(r));
  const made = h.calls
    .filter((c) => c.method === "commitImage" && String(c.args[1]).startsWith("tpl_c"))
    .map((c) => c.args[1]);
  assert.equal(made.length, 3);
  assert.deepEqual(deleted(), [made[0]]);
  assert.equal(store.layersBeyond("h1", 0).length, 2);
  // A rebuild that shares the first two steps boots from layer 2 and marks it used, so its new step's
  // layer pushes out layer 3 (made later, used less recently), not the one it booted.
  const b = t.submit("u1", "b", `${docker(2)}RUN other\n`);
  assert.equal((await finished(t, b.id)).status, "ready");
  await new Promise((r) => setImmediate(r));
  const booted = h.calls.filter((c) => c.method === "create").at(-1)!.args[0] as { image: string };
  assert.equal(booted.image, made[1]);
  assert.deepEqual(deleted(), [made[0], made[2]]);
  assert.equal(store.layersBeyond("h1", 0).length, 2);
  assert.ok(store.layersBeyond("h1", 0).some((l) => l.image === made[1]));
});

test("CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE takes 0 and refuses a negative count", () => {
  assert.equal(templateSettings({ CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE: "0" }).layerCache, 0);
  assert.equal(templateSettings({}).layerCache, 16);
  assert.throws(
    () => templateSettings({ CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE: "-1" }),
    /CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE must be an integer of at least 0/,
  );
});

test("a layer table from before the cap is migrated; its layers count as the least recently used", () => {
  const d = mkdtempSync(join(tmpdir(), "csb-tpl-"));
  dirs.push(d);
  const old = new Database(join(d, "templates.sqlite"));
  old.exec(`CREATE TABLE template_layers (hash TEXT NOT NULL, host_id TEXT NOT NULL, image TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (hash, host_id));
    INSERT INTO template_layers VALUES ('old', 'h1', 'tpl_cold', '2026-01-01T00:00:00.000Z');`);
  old.close();
  const store = new TemplateStore(d);
  store.putLayer("new", "u1", "h1", "tpl_cnew");
  assert.deepEqual(store.layersBeyond("h1", 1), [{ hash: "old", user_id: NO_OWNER, image: "tpl_cold" }]);
  store.close();
});

const SHARED = "FROM nodeops/sandbox:debian\nRUN pip install acme-internal-billing==4.2.1\nRUN two\n";

test("a step layer is its tenant's: another tenant's same Dockerfile builds from the base", async () => {
  const h = fakeHost();
  const { t } = open(h.hosts);
  const booted = () =>
    (h.calls.filter((c) => c.method === "create").at(-1)!.args[0] as { image: string }).image;
  const layers = () => h.calls.filter((c) => c.method === "commitImage" && c.args[2]).map((c) => c.args[1]);
  const cached = (id: string) => t.store.readLog(id).filter((f) => f.line === " ---> Using cache").length;
  const alice = t.submit("alice", "billing", SHARED);
  assert.equal((await finished(t, alice.id)).status, "ready");
  const aliceLayers = layers();
  assert.equal(aliceLayers.length, 2);
  h.calls.length = 0;
  const bob = t.submit("bob", "billing", SHARED);
  assert.equal((await finished(t, bob.id)).status, "ready");
  assert.equal(cached(bob.id), 0, "bob's build uses none of alice's layers");
  assert.equal(booted(), "nodeops/sandbox:debian");
  const ran = h.calls.filter((c) => c.method === "exec").map((c) => (c.args[1] as ExecRequest).argv.at(-1));
  assert.deepEqual(ran, ["pip install acme-internal-billing==4.2.1", "two"]);
  const bobLayers = layers();
  assert.equal(bobLayers.length, 2);
  assert.ok(!bobLayers.some((l) => aliceLayers.includes(l)), "bob's layers are images of his own");
  h.calls.length = 0;
  // The same tenant still builds from its cache.
  const again = t.submit("alice", "billing", SHARED);
  assert.equal((await finished(t, again.id)).status, "ready");
  assert.equal(cached(again.id), 2);
  assert.equal(booted(), aliceLayers[1]);
});

test("layers made before layers had an owner are never booted, and the next gc deletes their images", async () => {
  const d = mkdtempSync(join(tmpdir(), "csb-tpl-"));
  dirs.push(d);
  // The key the unowned cache gave SHARED's first step: base and step, no tenant.
  const oldKey = createHash("sha256")
    .update("template-layer v1\0nodeops/sandbox:debian")
    .update(
      `\0${JSON.stringify([["/bin/sh", "-c", "pip install acme-internal-billing==4.2.1"], {}, "/", "root"])}`,
    )
    .digest("hex")
    .slice(0, 40);
  const old = new Database(join(d, "templates.sqlite"));
  old.exec(`CREATE TABLE template_layers (hash TEXT NOT NULL, host_id TEXT NOT NULL, image TEXT NOT NULL,
    created_at TEXT NOT NULL, used_seq INTEGER, PRIMARY KEY (hash, host_id));
    INSERT INTO template_layers VALUES ('${oldKey}', 'h1', 'tpl_c${oldKey}', '2026-01-01T00:00:00.000Z', 1);`);
  old.close();
  const h = fakeHost();
  const { t } = open(h.hosts, d);
  const row = t.submit("bob", "billing", SHARED);
  assert.equal((await finished(t, row.id)).status, "ready");
  assert.equal(
    (h.calls.find((c) => c.method === "create")!.args[0] as { image: string }).image,
    "nodeops/sandbox:debian",
  );
  assert.ok(!t.store.readLog(row.id).some((f) => f.line === " ---> Using cache"));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    h.calls.filter((c) => c.method === "deleteImage").map((c) => c.args[0]),
    [`tpl_c${oldKey}`],
    "the unowned layer's image leaves the host",
  );
  assert.ok(!t.store.layersBeyond("h1", 0).some((l) => l.user_id === NO_OWNER));
});

test("a cached layer the host cannot boot: the build log gives the catalog's words, not the host's", async () => {
  const h = fakeHost();
  const { t } = open(h.hosts);
  const df = "FROM nodeops/sandbox:debian\nRUN one\nRUN two\n";
  assert.equal((await finished(t, t.submit("u1", "a", df).id)).status, "ready");
  const daemon = h.hosts.daemonOf() as unknown as { create: (spec: { image: string }) => Promise<unknown> };
  const create = daemon.create;
  daemon.create = async (spec) => {
    if (spec.image.startsWith("tpl_c"))
      throw new HostdError(
        "capacity",
        "not enough free memory to create a sandbox: 812 MiB free, /var/lib/x",
      );
    return create(spec);
  };
  const row = t.submit("u1", "b", df);
  assert.equal((await finished(t, row.id)).status, "ready");
  const lines = t.store.readLog(row.id).map((f) => f.line);
  assert.ok(
    lines.includes(
      " ---> cached layer unusable (no host capacity: not enough free memory on this host to create a sandbox); building from nodeops/sandbox:debian",
    ),
    lines.join("\n"),
  );
  assert.ok(!lines.some((l) => /var\/lib|812 MiB/.test(l)));
});
