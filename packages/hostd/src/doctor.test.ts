/**
 * doctor's cgroup check against fake cgroup roots (the real host's answer is whatever this machine has).
 *   node --test packages/hostd/dist/doctor.test.js
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { cgroupCheck, snapshotStoreCheck } from "./doctor.js";

const tmp = mkdtempSync(join(tmpdir(), "csb-doctor-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("cgroups: none usable is a failure that says what VMs lose", async () => {
  const c = await cgroupCheck(tmp);
  assert.equal(c.ok, false);
  assert.match(c.detail, /no usable cgroups under .*: VMs would run without CPU, memory and pids limits/);
});

test("cgroups: a mode whose probe cgroup cannot be set up is a failure naming the file", async () => {
  const root = join(tmp, "v2");
  mkdirSync(root);
  writeFileSync(join(root, "cgroup.controllers"), "cpu memory pids");
  // Where the probe's cpu.max would go, a directory: the write fails as a refused knob would.
  mkdirSync(join(root, "createos-sandbox", "doctor", `doctor-${process.pid}`, "cpu.max"), {
    recursive: true,
  });
  const c = await cgroupCheck(root);
  assert.equal(c.ok, false);
  assert.match(
    c.detail,
    /^v2 \(cpu, memory, pids under .*\), but a VM cgroup cannot be set up: .*cpu\.max: EISDIR/,
  );
});

test("snapshot store: plain is reported as such, auto says what a data dir without reflinks gets", () => {
  assert.match(snapshotStoreCheck({ CREATEOS_SANDBOX_SNAPSHOT_FS: "plain" }).detail, /^plain/);
  const auto = snapshotStoreCheck({});
  assert.match(auto.detail, auto.ok ? /^auto: .*XFS image/ : /forks copy their parent's RAM/);
});
