/**
 * Secrets at rest: the real program, started on a data dir someone left 0755 with a link planted where
 * the admin key file goes, keeps the dir 0700, the database 0600, and writes the key into a new 0600 file
 * of its own instead of through the link.
 */
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { cleanup, startProc } from "./helpers.js";

const mode = (p: string) => statSync(p).mode & 0o777;

test("data dir 0700, database 0600, admin key file 0600 and never written through a link", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-rest-"));
  const elsewhere = mkdtempSync(join(tmpdir(), "csb-rest-victim-"));
  const victim = join(elsewhere, "victim");
  writeFileSync(victim, "not yours\n");
  chmodSync(dataDir, 0o755);
  symlinkSync(victim, join(dataDir, "admin-api-key"));
  const s = await startProc({ dataDir, env: { CREATEOS_SANDBOX_BOOTSTRAP_API_KEY: "" } });
  try {
    assert.equal(mode(dataDir), 0o700);
    for (const f of ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"]) {
      const p = join(dataDir, f);
      if (f === "db.sqlite" || existsSync(p)) assert.equal(mode(p), 0o600, f);
    }
    const key = join(dataDir, "admin-api-key");
    assert.ok(lstatSync(key).isFile(), "the admin key file is a regular file, not the planted link");
    assert.equal(mode(key), 0o600);
    assert.match(readFileSync(key, "utf8"), /^skp_/);
    assert.equal(readFileSync(victim, "utf8"), "not yours\n");
  } finally {
    await s.stop();
    cleanup(dataDir);
    cleanup(elsewhere);
  }
});
