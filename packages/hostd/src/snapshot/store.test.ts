import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Layout } from "../records.js";
import { canReflink, forkRamMode, imagePath, mountAt, openStore, snapshotFsMode } from "./store.js";

const log = { info: () => {}, warn: () => {}, error: () => {} };

test("mountAt finds the filesystem mounted on a dir, the topmost one, with octal escapes undone", () => {
  const info = [
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "43 22 7:0 / /data/my\\040dir/hostd rw,relatime - xfs /dev/loop3 rw,discard",
    "44 22 0:40 / /data/other rw - tmpfs tmpfs rw",
    "45 43 7:1 / /data/my\\040dir/hostd rw - xfs /dev/loop4 rw",
  ].join("\n");
  assert.deepEqual(mountAt(info, "/data/my dir/hostd"), { fstype: "xfs", source: "/dev/loop4" });
  assert.deepEqual(mountAt(info, "/data/other"), { fstype: "tmpfs", source: "tmpfs" });
  assert.equal(mountAt(info, "/data"), undefined);
});

test("the store and fork-RAM settings accept their values and refuse others", () => {
  assert.equal(snapshotFsMode(undefined, {}), "auto");
  assert.equal(snapshotFsMode(undefined, { CREATEOS_SANDBOX_SNAPSHOT_FS: "plain" }), "plain");
  assert.equal(snapshotFsMode("xfs-image", { CREATEOS_SANDBOX_SNAPSHOT_FS: "plain" }), "xfs-image");
  assert.throws(
    () => snapshotFsMode(undefined, { CREATEOS_SANDBOX_SNAPSHOT_FS: "btrfs" }),
    /auto, xfs-image or plain/,
  );
  assert.equal(forkRamMode(undefined, {}), "copy");
  assert.throws(() => forkRamMode(undefined, { CREATEOS_SANDBOX_FORK_RAM: "clone" }), /copy or map/);
});

test("plain makes no image, and auto keeps a data dir that already holds state on a filesystem without reflinks", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "csb-store-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const native = await canReflink(dir);
  const plain = new Layout(join(dir, "a"), join(dir, "cache"));
  const s = await openStore(plain, "plain", log);
  assert.deepEqual(s, native ? { kind: "native", reflink: true } : { kind: "plain", reflink: false });
  assert.equal(existsSync(imagePath(plain)), false);

  const held = new Layout(join(dir, "b"), join(dir, "cache"));
  mkdirSync(held.snaps, { recursive: true });
  writeFileSync(join(held.snaps, "x"), "state of an earlier daemon");
  const a = await openStore(held, "auto", log);
  assert.equal(a.kind, native ? "native" : "plain");
  assert.equal(existsSync(imagePath(held)), false);
  if (!native) await assert.rejects(openStore(held, "xfs-image", log), /already holds state/);
});
