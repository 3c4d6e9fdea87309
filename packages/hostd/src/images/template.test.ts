import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { COMMITTED_IMAGE_RE, checkAndShrink, committedDir, committedImage } from "./template.js";

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

test("a committed disk is checked and shrunk by e2fsprogs running as no root, through a descriptor", async () => {
  // Each tool refuses to run as root here (a shim ahead of it on PATH), so the test fails if they are root.
  const shims = mkdtempSync(join(tmpdir(), "csb-shims-"));
  chmodSync(shims, 0o755);
  for (const tool of ["e2fsck", "resize2fs"])
    writeFileSync(
      join(shims, tool),
      `#!/bin/sh\n[ "$(id -u)" != 0 ] || { echo "${tool} ran as root" >&2; exit 99; }\nexec /usr/sbin/${tool} "$@"\n`,
      { mode: 0o755 },
    );
  // in a dir only root may enter: the tools reach the image by their descriptor alone
  const dir = join(root, "private");
  mkdirSync(dir, { mode: 0o700 });
  const img = join(dir, "rootfs.ext4");
  execFileSync("truncate", ["-s", "64M", img]);
  execFileSync("mkfs.ext4", ["-q", "-F", img]);
  const path = process.env.PATH;
  process.env.PATH = `${shims}:${path}`;
  try {
    await checkAndShrink(img);
  } finally {
    process.env.PATH = path;
    rmSync(shims, { recursive: true, force: true });
  }
  const st = statSync(img);
  assert.ok(st.size < 64 << 20, `shrunk: ${st.size} bytes`);
  assert.deepEqual([st.uid, st.gid], [0, 0], "root's again");
  assert.equal(spawnSync("e2fsck", ["-n", "-f", img], { stdio: "ignore" }).status, 0, "a clean filesystem");
});
