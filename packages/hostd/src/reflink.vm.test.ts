/**
 * Fork on a reflink store (snapshot/store.ts), on real VMs: the daemon gives a data dir on a filesystem
 * without reflinks a loop-mounted XFS image, a fork's RAM file is a clone of its parent's (shared extents,
 * almost no new space), and what a child writes reaches neither its parent's snapshot nor a sibling.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { SnapshotRef } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import { mountAt } from "./snapshot/store.js";
import { TEST_IMAGE, openOpts, sh, sha256, spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("reflink");
const hostd = join(dataDir, "hostd");
const mounted = () => mountAt(readFileSync("/proc/self/mountinfo", "utf8"), hostd);
const usedBytes = () => {
  const s = statfsSync(hostd);
  return (s.blocks - s.bfree) * s.bsize;
};

/** Bytes of `file` in extents FIEMAP flags `shared` (filefrag -v counts in 4 KiB blocks here). */
function sharedBytes(file: string): number {
  const out = execFileSync("filefrag", ["-v", "-b4096", file], { encoding: "utf8" });
  let n = 0;
  for (const l of out.split("\n")) {
    const m = /^\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):.*\bshared\b/.exec(l);
    if (m) n += Number(m[1]) * 4096;
  }
  return n;
}

test("on an XFS image store a fork's RAM is a reflink, and a child's writes stay its own", async () => {
  // `createos-sandbox hostd` writes its id into hostd/ before the daemon opens: not state, carried over.
  mkdirSync(hostd, { recursive: true });
  writeFileSync(join(hostd, "host-id"), "reflink-test-host\n");
  // No warm pool: its refill (a RAM copy from the image cache) would blur the free-space count.
  const opts = { ...openOpts(dataDir), snapshotFs: "xfs-image" as const, warmPool: 0 };
  const d = await LocalHostDaemon.open(opts);
  const kept = spec({ hostname: "rl-kept" });
  let snap: SnapshotRef | undefined;
  try {
    assert.equal(mounted()?.fstype, "xfs");
    assert.equal(readFileSync(join(hostd, "host-id"), "utf8"), "reflink-test-host\n");
    await d.ensureImage(TEST_IMAGE);
    await forksShareExtents(d);
    await d.create(kept);
    await sh(d, kept.sandbox_id, "echo kept > /tmp/kept");
    snap = await d.pause(kept.sandbox_id);
  } finally {
    for (const v of await d.list()) await d.destroy(v.sandbox_id).catch(() => undefined);
    await d.close();
  }
  // No VM left on it: unmounted at close. The next daemon mounts it again before it re-adopts, and the
  // snapshot paused into it resumes.
  assert.equal(mounted(), undefined);
  const d2 = await LocalHostDaemon.open(opts);
  try {
    assert.equal(mounted()?.fstype, "xfs");
    assert.ok((await d2.listSnapshots()).some((s) => s.snapshot_id === snap?.snapshot_id));
    await d2.resume(snap, kept);
    assert.equal((await sh(d2, kept.sandbox_id, "cat /tmp/kept")).trim(), "kept");
  } finally {
    for (const v of await d2.list()) await d2.destroy(v.sandbox_id).catch(() => undefined);
    await d2.close();
  }
  assert.equal(mounted(), undefined);
  rmSync(dataDir, { recursive: true, force: true });
});

async function forksShareExtents(d: LocalHostDaemon): Promise<void> {
  const p = spec({ hostname: "rl-parent" });
  await d.create(p);
  // Pages of the parent's RAM with data in them: 32 MiB of tmpfs.
  await sh(d, p.sandbox_id, "head -c 33554432 /dev/urandom > /tmp/fill && sync");
  const snap = await d.pause(p.sandbox_id);
  const parentRam = join(hostd, "snapshots", snap.snapshot_id, "ram");
  const parentHash = sha256(readFileSync(parentRam));
  const allocated = statSync(parentRam).blocks * 512;
  assert.ok(allocated > 32 * 2 ** 20, `the parent's RAM file holds its pages (${allocated} B)`);

  // A start_paused fork's RAM file is a clone no guest has run on yet: all shared, no new space.
  const before = usedBytes();
  const paused = await d.fork(snap, spec({ hostname: "rl-paused" }), { start_paused: true });
  assert.ok(paused.snapshot);
  const pausedRam = join(hostd, "snapshots", paused.snapshot.snapshot_id, "ram");
  const grown = usedBytes() - before;
  assert.ok(grown < allocated / 8, `a fork took ${grown} B of new space for a ${allocated} B RAM file`);
  assert.ok(sharedBytes(pausedRam) >= allocated * 0.99, "the paused fork's RAM is not all shared extents");
  assert.equal(statSync(pausedRam).blocks * 512, allocated);
  await d.deleteSnapshot(paused.snapshot);

  // Running forks start on shared extents; the pages their guests write become theirs alone.
  const k1 = spec({ hostname: "rl-kid-1" });
  const k2 = spec({ hostname: "rl-kid-2" });
  const kids = [k1, k2];
  for (const k of kids) await d.fork(snap, k);
  const [ram1, ram2] = kids.map((k) => join(hostd, "vms", k.sandbox_id, "ram")) as [string, string];
  try {
    for (const f of [ram1, ram2]) {
      const shared = sharedBytes(f);
      assert.ok(shared >= allocated / 4, `${f}: ${shared} B in shared extents of ${allocated}`);
    }

    // A secret only kid 1 writes: in its own RAM file, not in its sibling's nor in the parent's snapshot.
    const secret = `kid1-${randomBytes(12).toString("hex")}`;
    await sh(d, k1.sandbox_id, `printf %s ${secret} > /tmp/secret; sync`);
    const found = (f: string) => readFileSync(f).includes(Buffer.from(secret));
    assert.equal(found(ram1), true, "kid 1's RAM file holds what it wrote");
    assert.equal(found(ram2), false, "kid 2's RAM file holds kid 1's write");
    assert.equal(found(parentRam), false, "the parent's snapshot holds kid 1's write");
    assert.equal(sha256(readFileSync(parentRam)), parentHash, "the parent's RAM file changed");
    assert.equal((await sh(d, k2.sandbox_id, "cat /tmp/secret 2>/dev/null || echo none")).trim(), "none");

    // A fork pauses and resumes like any VM (its RAM file is its own: nothing travels in the state).
    const ks = await d.pause(k1.sandbox_id);
    assert.ok(existsSync(join(hostd, "snapshots", ks.snapshot_id, "ram")));
    await d.resume(ks, k1);
    assert.equal((await sh(d, k1.sandbox_id, "cat /tmp/secret")).trim(), secret);
  } finally {
    for (const k of kids) await d.destroy(k.sandbox_id).catch(() => undefined);
    await d.deleteSnapshot(snap);
  }
}
