import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SingleFlight, ensurePrivateDir, writeFileAtomic, writeJsonAtomic } from "./fs.js";

test("writeFileAtomic replaces the file and leaves no temp file behind", async () => {
  const dir = await mkdtemp(join(tmpdir(), "csb-fs-"));
  try {
    const p = join(dir, "rec.json");
    await writeJsonAtomic(p, { a: 1 });
    await writeJsonAtomic(p, { a: 2 });
    assert.deepEqual(JSON.parse(await readFile(p, "utf8")), { a: 2 });
    assert.deepEqual(await readdir(dir), ["rec.json"]);
    await assert.rejects(writeFileAtomic(join(dir, "missing", "x"), "y"));
    assert.deepEqual(await readdir(dir), ["rec.json"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("SingleFlight shares one run per key and does not cache failures", async () => {
  const f = new SingleFlight<number>();
  let runs = 0;
  const slow = () => new Promise<number>((r) => setTimeout(() => r(++runs), 20));
  const [a, b] = await Promise.all([f.do("k", slow), f.do("k", slow)]);
  assert.equal(a, 1);
  assert.equal(b, 1);
  await assert.rejects(f.do("k", () => Promise.reject(new Error("boom"))));
  assert.equal(await f.do("k", slow), 2);
});

test("ensurePrivateDir makes missing dirs 0700 and tightens an existing one of ours", async () => {
  const dir = await mkdtemp(join(tmpdir(), "csb-fs-"));
  try {
    const nested = join(dir, "a", "b");
    await ensurePrivateDir(nested);
    assert.equal((await stat(nested)).mode & 0o777, 0o700);
    await chmod(nested, 0o755);
    await ensurePrivateDir(nested);
    assert.equal((await stat(nested)).mode & 0o777, 0o700);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
