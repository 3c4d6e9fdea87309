import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { KeyBox } from "./keybox.js";

test("a sealed secret opens with the same key and id, and hides the clear text", () => {
  const box = KeyBox.fromKey(randomBytes(32));
  const sealed = box.seal("wJalrXUtnFEMI/K7MDENG", "disk_1");
  assert.ok(!sealed.includes("wJalrXUtnFEMI"));
  assert.notEqual(sealed, box.seal("wJalrXUtnFEMI/K7MDENG", "disk_1"), "a fresh IV each time");
  assert.equal(box.open(sealed, "disk_1"), "wJalrXUtnFEMI/K7MDENG");
});

test("another id, another key or a flipped byte does not open", () => {
  const box = KeyBox.fromKey(randomBytes(32));
  const sealed = box.seal("secret", "disk_1");
  assert.throws(() => box.open(sealed, "disk_2"));
  assert.throws(() => KeyBox.fromKey(randomBytes(32)).open(sealed, "disk_1"));
  const parts = sealed.split(".");
  const body = Buffer.from(parts[3]!, "base64url");
  body[0]! ^= 1;
  parts[3] = body.toString("base64url");
  assert.throws(() => box.open(parts.join("."), "disk_1"));
  assert.throws(() => box.open("plain", "disk_1"));
});

test("the key file is made 0600 once and reused; a missing operator file is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "keybox-"));
  try {
    const path = join(dir, "disk-key");
    const a = KeyBox.load(path, true);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(readFileSync(path).length, 32);
    const b = KeyBox.load(path, true);
    assert.equal(b.open(a.seal("x", "d"), "d"), "x");
    assert.throws(() => KeyBox.load(join(dir, "absent"), false), /does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
