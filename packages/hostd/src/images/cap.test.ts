/**
 * The image-cache cap on a fake cache dir: least recently used rootfs files and trees no disk backs onto
 * go first, until the total is within the cap; a tree is as recent as its newest rootfs; referenced,
 * recently used, log and in-progress files stay. Then through a host daemon's open, where a snapshot's
 * disk (a real qcow2 naming its backing file) references a rootfs.
 *   node --test packages/hostd/dist/images/cap.test.js
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { tempDataDir } from "../testutil.js";
import { evictImages, listImages, touchImage } from "./cap.js";

const MIB = 2 ** 20;
const root = tempDataDir("imagecap");
after(() => rmSync(root, { recursive: true, force: true }));

/** A file of `mib` MiB (allocated), last modified `ageS` seconds ago. */
function file(dir: string, name: string, mib: number, ageS: number): string {
  mkdirSync(dir, { recursive: true });
  const p = join(dir, name);
  writeFileSync(p, Buffer.alloc(mib * MIB, 1));
  const t = new Date(Date.now() - ageS * 1000);
  utimesSync(p, t, t);
  return p;
}

test("listImages: rootfs files and trees are entries, a tree as recent as its newest rootfs", async () => {
  const cache = join(root, "list");
  const img = join(cache, "debian_12");
  const tar = file(img, "aa11.tar", 1, 900);
  file(img, "aa11-bb22.ext4", 1, 800);
  const newest = file(img, "aa11-bb22-cacc33.ext4", 1, 700);
  file(img, "aa11.log", 1, 10);
  mkdirSync(join(img, "aa11.tmp-1")); // a build in progress
  const byPath = new Map((await listImages(cache)).map((e) => [e.path, e]));
  assert.equal(byPath.size, 3);
  assert.equal(byPath.get(tar)?.usedAt, byPath.get(newest)?.usedAt);
  await touchImage(newest);
  const again = new Map((await listImages(cache)).map((e) => [e.path, e]));
  assert.ok((again.get(newest)?.usedAt ?? 0) > Date.now() - 5000, "the marker is the LRU clock");
  assert.equal(again.get(tar)?.usedAt, again.get(newest)?.usedAt);
});

test("listImages: an npm layer is as recent as the newest rootfs built from it, no other", async () => {
  const img = join(root, "layer", "devbox_1");
  const tree = file(img, "aa11.tar", 1, 900);
  const layer = file(img, "cc33.tar", 1, 900);
  const other = file(img, "dd44.tar", 1, 950);
  const built = file(img, "aa11-cc33-bb22-caee55.ext4", 1, 100);
  const byPath = new Map((await listImages(join(root, "layer"))).map((e) => [e.path, e]));
  assert.equal(byPath.get(tree)?.usedAt, byPath.get(built)?.usedAt);
  assert.equal(byPath.get(layer)?.usedAt, byPath.get(built)?.usedAt);
  assert.ok(
    (byPath.get(other)?.usedAt ?? 0) < (byPath.get(built)?.usedAt ?? 0),
    "an unrelated layer keeps its age",
  );
});

test("evicts least recently used unreferenced entries until within the cap", async () => {
  const cache = join(root, "lru");
  const a = join(cache, "a");
  const b = join(cache, "b");
  const oldest = file(a, "aa11-0001.ext4", 2, 500);
  const referenced = file(a, "aa11-0002.ext4", 2, 400);
  const older = file(b, "bb22-0001.ext4", 2, 300);
  const fresh = file(b, "bb22-0002.ext4", 2, 1); // within the idle window
  file(b, "bb22.log", 2, 900);
  // 8 MiB of entries, cap 3: the two evictable ones not fresh go, the oldest first; still over the cap.
  const evicted = await evictImages(cache, 3, (p) => p === referenced);
  assert.deepEqual(evicted, [oldest, older]);
  assert.deepEqual(readdirSync(a), ["aa11-0002.ext4"]);
  assert.deepEqual(readdirSync(b).sort(), ["bb22-0002.ext4", "bb22.log"]);
  assert.deepEqual(await evictImages(cache, 2, (p) => p === referenced, { minIdleMs: 0 }), [fresh]);
  assert.ok(existsSync(referenced));
  assert.deepEqual(await evictImages(cache, 2, () => false, { minIdleMs: 0 }), []);
});

test("a host daemon applies the cap at open, keeping the rootfs a snapshot's disk backs onto", async () => {
  const dataDir = join(root, "daemon");
  const cache = join(dataDir, "cache");
  const img = join(cache, "rootfs", "debian_12");
  const kept = file(img, "cc33-0001.ext4", 1, 600);
  const gone = file(img, "cc33-0002.ext4", 1, 700);
  const sdir = join(dataDir, "hostd", "snapshots", "snap-1");
  mkdirSync(sdir, { recursive: true });
  execFileSync("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "raw",
    "-b",
    kept,
    join(sdir, "disk.qcow2"),
  ]);
  writeFileSync(join(sdir, "meta.json"), JSON.stringify({ snapshot_id: "snap-1", chain: [] }));
  // A complete snapshot has all its files (re-adoption sets aside one that lacks them).
  for (const f of ["ram", "state"]) writeFileSync(join(sdir, f), "");
  const d = await LocalHostDaemon.open({
    dataDir,
    cacheDir: cache,
    warmPool: 0,
    netPool: 0,
    imageCacheMib: 0,
  });
  await d.close();
  assert.ok(existsSync(kept), "the rootfs a snapshot backs onto was evicted");
  assert.ok(!existsSync(gone), "the unreferenced rootfs was kept over the cap");
});
