/**
 * The free-space reserve: with a reserve larger than any disk, create and fork are refused as `capacity`
 * in plain words before anything is written (no VM boots: the refusal comes first), and the reserve's
 * setting is read from the open option, then the environment.
 *   node --test packages/hostd/dist/diskreserve.test.js
 */
import assert from "node:assert/strict";
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { HostdError, type SnapshotRef } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import { DEFAULT_MIN_FREE_DISK_MIB, checkDiskReserve, freeDiskMib, minFreeDiskMib } from "./diskreserve.js";
import { spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("diskreserve");
const ABSURD = 2 ** 40; // MiB: an exbibyte, more than any test machine has
let d: LocalHostDaemon;

before(async () => {
  d = await LocalHostDaemon.open({
    dataDir,
    cacheDir: join(dataDir, "cache"),
    warmPool: 0,
    netPool: 0,
    minFreeDiskMib: ABSURD,
  });
});

after(async () => {
  await d?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const capacity =
  (re: RegExp, reserve = ABSURD) =>
  (e: unknown) => {
    assert.ok(e instanceof HostdError, String(e));
    assert.equal(e.code, "capacity");
    assert.match(e.message, re);
    assert.match(e.message, new RegExp(`${reserve} MiB kept in reserve`));
    return true;
  };

test("create is refused as capacity while the disk is below the reserve, and leaves nothing behind", async () => {
  await assert.rejects(d.create(spec()), capacity(/not enough free disk on this host to create a sandbox/));
  assert.deepEqual(readdirSync(join(dataDir, "hostd", "vms")), []);
});

test("fork is refused as capacity before its parent snapshot is even read", async () => {
  const parent: SnapshotRef = {
    snapshot_id: "snap-missing",
    sandbox_id: "parent",
    mem_mib: 256,
    vcpu: 1,
    disk_mib: 2048,
    image: "debian:12",
    size_bytes: 0,
    pause_ms: 1,
  };
  await assert.rejects(d.fork(parent, spec()), capacity(/to fork a sandbox/));
  await assert.rejects(d.fork(parent, spec(), { start_paused: true }), capacity(/to fork a sandbox/));
});

test("the reserve passes when the disk has more free than it", async () => {
  const free = await freeDiskMib(dataDir);
  assert.ok(free !== undefined && free > 0);
  await checkDiskReserve([dataDir, join(dataDir, "no-such-dir")], 0, "x");
  await assert.rejects(checkDiskReserve([dataDir], free + 1, "pause a sandbox"), capacity(/pause/, free + 1));
});

test("the reserve setting: option, then CREATEOS_SANDBOX_MIN_FREE_DISK_MIB, then the default", () => {
  assert.equal(minFreeDiskMib(5, { CREATEOS_SANDBOX_MIN_FREE_DISK_MIB: "7" }), 5);
  assert.equal(minFreeDiskMib(undefined, { CREATEOS_SANDBOX_MIN_FREE_DISK_MIB: "7" }), 7);
  assert.equal(minFreeDiskMib(undefined, {}), DEFAULT_MIN_FREE_DISK_MIB);
  assert.throws(
    () => minFreeDiskMib(undefined, { CREATEOS_SANDBOX_MIN_FREE_DISK_MIB: "-1" }),
    /non-negative/,
  );
});
