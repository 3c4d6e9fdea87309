/**
 * kill -9 of the server (and with it the in-process host daemon; QEMU outlives both) at every named crash
 * point and at random moments of concurrent pauses, resumes and forks, then a restart on the same data
 * dir: every sandbox ends in exactly one consistent state — running with its one VM, or paused with a
 * complete snapshot that resumes with its disk and memory intact — nothing is orphaned or quarantined, and
 * the host daemon's snapshots are exactly the ones the database records.
 */
import assert from "node:assert/strict";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { CRASH_POINT_ENV, type CrashPoint } from "@createos-sandbox/hostd/sys/crash";
import { assertConsistent, assertIntact, rowsOf, seed, settleAll } from "./crash-helpers.js";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, call, cleanup } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Network namespaces of sandboxes, each with when it was made (a re-made one is a new one). */
const netns = () =>
  readdirSync("/run/netns")
    .filter((n) => n.startsWith("csb-"))
    .map((n) => `${n}@${statSync(join("/run/netns", n)).mtimeMs}`);

let s: ServerProc | undefined;
let dataDir: string | undefined;
let key = "";
const nsBefore = netns();
/** Sandbox id → the value seeded into its disk and memory (a fork's child inherits its parent's). */
const seeded = new Map<string, string>();

after(async () => {
  if (s) {
    await destroyAll(s, [key]);
    await s.stop();
    // Only none added: a daemon also reclaims namespaces other dead daemons left.
    const added = netns().filter((n) => !nsBefore.includes(n));
    assert.deepEqual(added, [], "every network namespace of the crashed daemons is gone");
  }
  if (dataDir) cleanup(dataDir);
});

async function restart(env: Record<string, string> = {}): Promise<ServerProc> {
  await s!.stop("SIGKILL");
  s = await startEngineServer(env, dataDir);
  return s;
}

async function create(name: string, val: string): Promise<string> {
  const r = await call(s!.url, "POST", "/v1/sandboxes", { key, body: { shape: SHAPE, name } });
  assert.equal(r.status, 200, r.text);
  const id = r.json.data.id as string;
  await seed(s!, key, id, val);
  seeded.set(id, val);
  return id;
}

const post = (id: string, verb: string, body?: unknown) =>
  call(s!.url, "POST", `/v1/sandboxes/${id}/${verb}`, { key, ...(body ? { body } : {}) });

/** Restarts with the crash point armed, runs `act`, waits for the self-SIGKILL, restarts clean, settles. */
async function crashAt(point: CrashPoint, act: () => Promise<unknown>): Promise<Map<string, string>> {
  await restart({ [CRASH_POINT_ENV]: point });
  const acted = act().catch(() => undefined);
  const died = await Promise.race([s!.exited.then(() => true), sleep(180_000).then(() => false)]);
  assert.ok(died && s!.proc.signalCode === "SIGKILL", `${point}: the server killed itself there`);
  await acted;
  s = await startEngineServer({}, dataDir);
  return settleAll(s, key);
}

test(
  "kill -9 mid-create, restart: the row settles and nothing is orphaned",
  { timeout: 30 * 60_000 },
  async (t) => {
    s = await startEngineServer();
    dataDir = s.dataDir;
    key = s.adminKey;
    const inflight = fetch(`${s.url}/v1/sandboxes`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body: JSON.stringify({ shape: SHAPE, name: "mid-create" }),
    }).catch(() => undefined);
    let createdId: string | undefined;
    for (let i = 0; i < 200 && !createdId; i++) {
      const l = await call(s.url, "GET", "/v1/sandboxes?status=creating", { key });
      createdId = l.json.data.data[0]?.id;
      if (!createdId) await sleep(10);
    }
    assert.ok(createdId, "saw the row in creating");
    await restart();
    await inflight;
    const st = (await settleAll(s, key)).get(createdId!);
    t.diagnostic(`mid-create row settled as ${st}`);
    // A create answers once the VM runs: one never answered may fail, but must not leave anything behind.
    assert.ok(st === "running" || st === "failed", `mid-create row settled as ${st}`);
    await assertConsistent(dataDir!, "after mid-create");
    if (st === "running") await call(s.url, "DELETE", `/v1/sandboxes/${createdId}`, { key });
  },
);

test(
  "every named crash point: restart leaves each sandbox in one consistent state",
  { timeout: 30 * 60_000 },
  async () => {
    const a = await create("crash-a", "value-a");
    let st = await crashAt("pause.after_state", () => post(a, "pause"));
    assert.equal(st.get(a), "paused", "pause.after_state: the accepted pause was redone");
    await assertConsistent(dataDir!, "pause.after_state");

    st = await crashAt("resume.after_rename", () => post(a, "resume"));
    assert.equal(st.get(a), "running", "resume.after_rename: the accepted resume was redone");
    await assertConsistent(dataDir!, "resume.after_rename");
    await assertIntact(s!, key, a, "value-a");

    st = await crashAt("pause.after_rename", () => post(a, "pause"));
    assert.equal(st.get(a), "paused", "pause.after_rename: the pause was finished");
    await assertConsistent(dataDir!, "pause.after_rename");

    st = await crashAt("fork.after_copy", () => post(a, "fork", {}));
    const child = (await rowsOf(dataDir!)).find((r) => r.forked_from === a);
    assert.ok(child, "fork.after_copy: the child row survived");
    assert.equal(st.get(child.id), "running", "fork.after_copy: the fork was redone from the intact parent");
    assert.equal(st.get(a), "paused", "the parent stays paused");
    await assertConsistent(dataDir!, "fork.after_copy");
    await assertIntact(s!, key, child.id, "value-a");
    seeded.set(child.id, "value-a");

    st = await crashAt("pause.before_db", () => post(child.id, "pause"));
    assert.equal(st.get(child.id), "paused", "pause.before_db: the host's snapshot was recorded");
    await assertConsistent(dataDir!, "pause.before_db");

    st = await crashAt("destroy.mid", () => call(s!.url, "DELETE", `/v1/sandboxes/${a}`, { key }));
    assert.equal(st.get(a), "destroyed", "destroy.mid: the destroy was finished");
    seeded.delete(a);
    await assertConsistent(dataDir!, "destroy.mid");

    assert.equal((await post(child.id, "resume")).status, 202);
    assert.equal((await settleAll(s!, key)).get(child.id), "running");
    await assertIntact(s!, key, child.id, "value-a");
    await assertConsistent(dataDir!, "after the named crash points");
  },
);

test(
  "SIGKILL at random moments of concurrent pause/resume/fork: nothing lost over 20 crashes",
  { timeout: 60 * 60_000 },
  async (t) => {
    await create("crash-b", "value-b");
    await create("crash-c", "value-c");
    const ROUNDS = 20;
    const MAX_SANDBOXES = 5;
    for (let round = 1; round <= ROUNDS; round++) {
      const st = await settleAll(s!, key);
      // Caught at once: the kill below cuts these requests off, and an unhandled rejection fails the test.
      const ops: Promise<unknown>[] = [];
      const fire = (p: Promise<unknown>) => ops.push(p.catch(() => undefined));
      const live = [...seeded.keys()];
      for (const id of live) {
        const status = st.get(id);
        if (status === "running") fire(post(id, "pause"));
        else if (status === "paused" && live.length < MAX_SANDBOXES && Math.random() < 0.3)
          fire(post(id, "fork", { start_paused: Math.random() < 0.5 }));
        else if (status === "paused") fire(post(id, "resume"));
      }
      const delay = 50 + Math.floor(Math.random() * 550);
      await sleep(delay);
      await restart();
      await Promise.all(ops);
      const after = await settleAll(s!, key);
      // A fork whose row was written before the kill is redone: its child inherits the parent's seed.
      for (const r of await rowsOf(dataDir!))
        if (r.forked_from && seeded.has(r.forked_from) && !seeded.has(r.id))
          seeded.set(r.id, seeded.get(r.forked_from)!);
      const bad = [...seeded.keys()].filter((id) => !["running", "paused"].includes(after.get(id) ?? "none"));
      assert.deepEqual(
        bad.map((id) => `${id}:${after.get(id)}`),
        [],
        `round ${round} (kill after ${delay} ms)`,
      );
      await assertConsistent(dataDir!, `round ${round}`);
      t.diagnostic(
        `round ${round}: killed after ${delay} ms; ${[...seeded.keys()].map((id) => after.get(id)).join(" ")}`,
      );
      if (round % 5 === 0)
        for (const id of seeded.keys())
          if (after.get(id) === "running") await assertIntact(s!, key, id, seeded.get(id)!);
    }
    for (const id of seeded.keys()) await post(id, "resume");
    const end = await settleAll(s!, key);
    for (const [id, val] of seeded) {
      assert.equal(end.get(id), "running", id);
      await assertIntact(s!, key, id, val);
    }
    await assertConsistent(dataDir!, "at the end");
  },
);
