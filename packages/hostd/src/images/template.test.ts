import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { COMMITTED_IMAGE_RE, committedDir, committedImage } from "./template.js";

const root = mkdtempSync(join(tmpdir(), "csb-committed-"));
after(() => rmSync(root, { recursive: true, force: true }));

function commit(name: string, nonce: string, kernel = join(root, "vmlinux")): void {
  const dir = committedDir(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "rootfs.ext4"), "x");
  writeFileSync(kernel, "k");
  writeFileSync(
    join(dir, "meta.json"),
    JSON.stringify({ name, base: "nodeops/sandbox:debian", kernel, size_bytes: 1, nonce, created_at: "" }),
  );
}

test("committed image names are tpl_ ids, never a built-in's name:tag or a path", () => {
  assert.ok(COMMITTED_IMAGE_RE.test("tpl_01k0abc"));
  for (const bad of ["devbox:1", "nodeops/sandbox:debian", "tpl_../x", "tpl_", "x"])
    assert.ok(!COMMITTED_IMAGE_RE.test(bad), bad);
  assert.equal(committedImage(root, "../../etc"), undefined);
});

test("a committed image resolves with its kernel; a re-commit of a name gets a new warm key", () => {
  assert.equal(committedImage(root, "tpl_a"), undefined, "not committed yet");
  commit("tpl_a", "n1");
  const a = committedImage(root, "tpl_a")!;
  assert.equal(a.rootfs, join(committedDir(root, "tpl_a"), "rootfs.ext4"));
  assert.equal(a.kernel, join(root, "vmlinux"));
  assert.equal(committedImage(root, "tpl_a")!.hash, a.hash, "stable");
  commit("tpl_a", "n2");
  assert.notEqual(committedImage(root, "tpl_a")!.hash, a.hash);
  mkdirSync(join(root, "gone"));
  commit("tpl_b", "n1", join(root, "gone", "vmlinux-missing-later"));
  rmSync(join(root, "gone"), { recursive: true, force: true });
  assert.equal(committedImage(root, "tpl_b"), undefined, "its kernel is gone: not bootable");
});
