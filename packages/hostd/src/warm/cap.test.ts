/**
 * The warm-cache cap on a fake cache dir: least recently used unreferenced entries go first, until the
 * total is within the cap; referenced, recently used and incomplete entries stay. Then the same through a
 * host daemon's open, where a snapshot backing onto an entry references it.
 *   node --test packages/hostd/dist/warm/cap.test.js
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { tempDataDir } from "../testutil.js";
import { evictWarm, listWarm, touchWarm } from "./cap.js";

const MIB = 2 ** 20;
const root = tempDataDir("warmcap");
after(() => rmSync(root, { recursive: true, force: true }));

/** A complete entry of `mib` MiB (allocated: written, not sparse), last used `ageS` seconds ago. */
function entry(cache: string, key: string, mib: number, ageS: number): string {
  const dir = join(cache, key);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "ram"), Buffer.alloc(mib * MIB, 1));
  writeFileSync(join(dir, "meta.json"), JSON.stringify({ key }));
  const t = new Date(Date.now() - ageS * 1000);
  utimesSync(join(dir, "meta.json"), t, t);
  return dir;
}

test("touchWarm moves an entry to the front of the LRU order", async () => {
  const cache = join(root, "touch");
  const a = entry(cache, "a", 1, 100);
  entry(cache, "b", 1, 50);
  const order = async () =>
    (await listWarm(cache)).sort((x, y) => x.usedAt - y.usedAt).map((e) => e.path.slice(-1));
  assert.deepEqual(await order(), ["a", "b"]);
  await touchWarm(a);
  assert.ok(existsSync(join(a, "used")));
  assert.deepEqual(await order(), ["b", "a"]);
  await touchWarm(a); // again: the marker exists now
  assert.deepEqual(await order(), ["b", "a"]);
});

test("evicts least recently used unreferenced entries until within the cap", async () => {
  const cache = join(root, "lru");
  const oldest = entry(cache, "oldest", 2, 500);
  const referenced = entry(cache, "referenced", 2, 400);
  const older = entry(cache, "older", 2, 300);
  const old = entry(cache, "old", 2, 200);
  const fresh = entry(cache, "fresh", 2, 1); // within the idle window: a create may be using it
  mkdirSync(join(cache, "capturing.tmp-1-abc"));
  writeFileSync(join(cache, "capturing.tmp-1-abc", "ram"), Buffer.alloc(4 * MIB, 1));
  mkdirSync(join(cache, "incomplete"));
  // 10 MiB of entries, cap 5: three of the four evictable ones must go, the oldest first.
  const evicted = await evictWarm(cache, 5, (d) => d === referenced);
  assert.deepEqual(evicted, [oldest, older, old]);
  assert.deepEqual(readdirSync(cache).sort(), ["capturing.tmp-1-abc", "fresh", "incomplete", "referenced"]);
  assert.ok(existsSync(join(fresh, "ram")) && existsSync(join(referenced, "ram")));
  // Within the cap now: nothing more goes.
  assert.deepEqual(await evictWarm(cache, 5, () => false, { minIdleMs: 0 }), []);
  // Over it again, with no idle window: the least recent unreferenced one goes, the referenced one stays.
  assert.deepEqual(await evictWarm(cache, 0, (d) => d === referenced, { minIdleMs: 0 }), [fresh]);
  assert.ok(existsSync(referenced));
});

test("a host daemon applies the cap at open, keeping the entry a snapshot backs onto", async () => {
  const dataDir = join(root, "daemon");
  const cache = join(dataDir, "cache");
  const warm = join(cache, "warm");
  const kept = entry(warm, "kept", 1, 600);
  const gone = entry(warm, "gone", 1, 700);
  const sdir = join(dataDir, "hostd", "snapshots", "snap-1");
  mkdirSync(sdir, { recursive: true });
  writeFileSync(
    join(sdir, "meta.json"),
    JSON.stringify({ snapshot_id: "snap-1", chain: [join(kept, "disk.qcow2")] }),
  );
  // A complete snapshot has its files (re-adoption sets aside one that lacks them).
  for (const f of ["ram", "state", "disk.qcow2"]) writeFileSync(join(sdir, f), "");
  const d = await LocalHostDaemon.open({
    dataDir,
    cacheDir: cache,
    warmPool: 0,
    netPool: 0,
    warmCacheMib: 0,
  });
  await d.close();
  assert.ok(existsSync(kept), "the referenced entry was evicted");
  assert.ok(!existsSync(gone), "the unreferenced entry was kept over the cap");
});
