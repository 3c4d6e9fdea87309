/**
 * What a SIGKILL leaves half made or half deleted in the caches and beside the committed images is
 * deleted at the next start, and nothing else is (a live daemon's capture in progress is kept).
 *   node --test packages/hostd/dist/cachecap.test.js
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { sweepLeftovers } from "./cachecap.js";
import { Layout } from "./records.js";
import { tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("sweep");
after(() => rm(dataDir, { recursive: true, force: true }));

test("sweepLeftovers deletes cut-short evictions, dead daemons' captures and unfinished commits", async () => {
  const layout = new Layout(dataDir, join(dataDir, "cache"));
  const rootfs = join(layout.cache, "rootfs", "debian-12");
  const images = join(layout.root, "images");
  for (const d of [layout.warm, rootfs, images]) await mkdir(d, { recursive: true });
  // A process that has exited: its pid is no daemon's.
  const dead = spawnSync("true").pid;
  const dirs = {
    [layout.warm]: [
      "k1",
      `k2.tmp-${dead}-0a1b2c3d`,
      `k3.tmp-${process.pid}-0a1b2c3d`,
      // pid 1 (init) is alive: another daemon's capture, as far as this one can tell.
      "k4.tmp-1-0a1b2c3d",
      "k5.evict-0a1b2c3d",
    ],
    [images]: ["tpl_a", "tpl_b.tmp-0a1b2c3d"],
  };
  for (const [d, names] of Object.entries(dirs))
    for (const n of names) {
      await mkdir(join(d, n));
      await writeFile(join(d, n, "meta.json"), "{}");
    }
  for (const n of [
    "abc-1.ext4",
    "abc-1.ext4.used",
    "abd-1.ext4.evict-0a1b2c3d",
    "abd-1.ext4.used.evict-9f8e7d6c",
  ])
    await writeFile(join(rootfs, n), "x");

  await sweepLeftovers(layout);

  assert.deepEqual((await readdir(layout.warm)).sort(), [
    "k1",
    `k3.tmp-${process.pid}-0a1b2c3d`,
    "k4.tmp-1-0a1b2c3d",
  ]);
  assert.deepEqual((await readdir(rootfs)).sort(), ["abc-1.ext4", "abc-1.ext4.used"]);
  assert.deepEqual(await readdir(images), ["tpl_a"]);
});
