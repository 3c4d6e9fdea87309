import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Host } from "../host.js";
import { Layout } from "../records.js";
import { gcWarmRam, warmRamDir, warmRamSource } from "./storeram.js";

test("a warm entry's RAM is copied onto a reflink store once, again when the entry is rebuilt, and gc drops the rest", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "csb-warmram-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const layout = new Layout(join(dir, "data"), join(dir, "cache"));
  const warm = layout.warmDir("k1-1c-256m-2048d");
  mkdirSync(warm, { recursive: true });
  writeFileSync(join(warm, "ram"), "first");
  const host = { layout, store: { kind: "xfs-image", reflink: true } } as unknown as Host;

  const a = await warmRamSource(host, warm);
  assert.ok(a.startsWith(warmRamDir(layout)));
  assert.equal(readFileSync(a, "utf8"), "first");
  assert.equal(await warmRamSource(host, warm), a, "a second restore reuses the copy");

  // The entry evicted and captured anew: a new file (another inode), so a copy of its own.
  rmSync(join(warm, "ram"));
  writeFileSync(join(warm, "ram"), "second");
  const b = await warmRamSource(host, warm);
  assert.notEqual(b, a);
  assert.equal(readFileSync(b, "utf8"), "second");
  assert.deepEqual(readdirSync(warmRamDir(layout)), [b.slice(warmRamDir(layout).length + 1)]);

  writeFileSync(join(warmRamDir(layout), "gone-1c-256m-2048d-1-2.ram"), "stale");
  writeFileSync(`${b}.tmp-abcd1234`, "half");
  await gcWarmRam(layout);
  assert.deepEqual(readdirSync(warmRamDir(layout)), [b.slice(warmRamDir(layout).length + 1)]);

  const plain = { layout, store: { kind: "plain", reflink: false } } as unknown as Host;
  assert.equal(await warmRamSource(plain, warm), join(warm, "ram"), "a plain store copies from the cache");
});
