/**
 * The console log's cap, on a file opened O_APPEND as QEMU opens it: past the cap it is copied to
 * console.log.1 and truncated in place, and the writer's next write lands at the new end (no hole).
 *   node --test packages/hostd/dist/vmm/devices/console.test.js
 */
import assert from "node:assert/strict";
import {
  closeSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { tempDataDir, victimFile } from "../../testutil.js";
import { capConsoleLog } from "./console.js";

const dir = tempDataDir("console");
after(() => rmSync(dir, { recursive: true, force: true }));

test("a console log over its cap is rotated once; the appending writer carries on at its start", async () => {
  const log = join(dir, "console.log");
  const fd = openSync(log, "a");
  try {
    writeSync(fd, "a".repeat(1000));
    assert.equal(await capConsoleLog(log, 1000), false, "at the cap is not over it");
    writeSync(fd, "b");
    assert.equal(await capConsoleLog(log, 1000), true);
    assert.equal(statSync(log).size, 0);
    assert.equal(readFileSync(`${log}.1`, "utf8"), `${"a".repeat(1000)}b`);
    assert.equal(statSync(`${log}.1`).mode & 0o777, 0o600);
    writeSync(fd, "after\n");
    // O_APPEND: the write went to offset 0, not past a hole at the old offset.
    assert.equal(readFileSync(log, "utf8"), "after\n");
    assert.equal(await capConsoleLog(log, 1000), false);
  } finally {
    closeSync(fd);
  }
  assert.equal(await capConsoleLog(join(dir, "missing.log"), 1), false);
});

// The VM dir is the jailed QEMU's: it can plant either name as a link to a file of the host's.
test("a planted console.log.1 link is replaced, never written through", async () => {
  const d = join(dir, "planted-old");
  mkdirSync(d);
  const victim = victimFile(dir, "victim-old");
  const log = join(d, "console.log");
  writeFileSync(log, "x".repeat(2000));
  symlinkSync(victim.path, `${log}.1`);
  assert.equal(await capConsoleLog(log, 1000), true);
  victim.assertIntact("after the rotation");
  assert.ok(lstatSync(`${log}.1`).isFile(), "console.log.1 is the daemon's own file now");
  assert.equal(readFileSync(`${log}.1`, "utf8"), "x".repeat(2000));
  assert.equal(statSync(`${log}.1`).mode & 0o777, 0o600);
  assert.equal(statSync(log).size, 0);
});

test("a console.log that is a link is refused, its target neither copied nor truncated", async () => {
  const d = join(dir, "planted-log");
  mkdirSync(d);
  const victim = victimFile(dir, "victim-log");
  const log = join(d, "console.log");
  symlinkSync(victim.path, log);
  await assert.rejects(capConsoleLog(log, 4), /not a regular file/);
  victim.assertIntact("after the refused rotation");
  assert.throws(() => lstatSync(`${log}.1`), /ENOENT/, "nothing copied out of the link's target");
});
