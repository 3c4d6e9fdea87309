import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { qemuImg } from "../sys/index.js";
import { DEFAULT_UID_BASE, backingChain, jailArgv, jailIds } from "./jail.js";

test("jailIds: base + slot, configurable, never 0", () => {
  assert.deepEqual(jailIds(3, {}), { uid: DEFAULT_UID_BASE + 3, gid: DEFAULT_UID_BASE + 3 });
  assert.deepEqual(jailIds(0, { CREATEOS_SANDBOX_JAIL_UID_BASE: "5000" }), { uid: 5000, gid: 5000 });
  assert.throws(() => jailIds(0, { CREATEOS_SANDBOX_JAIL_UID_BASE: "0" }), /JAIL_UID_BASE=0/);
  assert.throws(() => jailIds(0, { CREATEOS_SANDBOX_JAIL_UID_BASE: "-1" }), /JAIL_UID_BASE/);
  assert.throws(() => jailIds(0, { CREATEOS_SANDBOX_JAIL_UID_BASE: "abc" }), /JAIL_UID_BASE/);
});

test("backingChain: every layer below a qcow2 overlay, relative names resolved, raw bottom last", async () => {
  const d = mkdtempSync(join(tmpdir(), "jail-"));
  try {
    await qemuImg(["create", "-q", "-f", "raw", join(d, "base.ext4"), "1M"]);
    await qemuImg([
      "create",
      "-q",
      "-f",
      "qcow2",
      "-F",
      "raw",
      "-b",
      join(d, "base.ext4"),
      join(d, "l1.qcow2"),
    ]);
    // a relative backing name is relative to the image's own directory
    await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "l1.qcow2", join(d, "top.qcow2")]);
    assert.deepEqual(await backingChain(join(d, "top.qcow2")), [join(d, "l1.qcow2"), join(d, "base.ext4")]);
    assert.deepEqual(await backingChain(join(d, "base.ext4")), []);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("jailArgv: root, pidfile, ids, cgroups, mounts by kind, then the program", () => {
  assert.deepEqual(
    jailArgv(
      "/c/jailer/h/createos-jailer",
      { uid: 7, gid: 8, pidfile: "/v/qemu.pid" },
      {
        cg: ["/cg/cpu/v", "/cg/memory/v"],
        netns: "/run/netns/n",
        ro: ["/k"],
        rw: ["/v"],
        dev: ["/dev/null"],
      },
      "/usr/bin/qemu",
      ["-S"],
    ),
    [
      "/c/jailer/h/root",
      "/v/qemu.pid",
      "7",
      "8",
      "cg",
      "/cg/cpu/v",
      "cg",
      "/cg/memory/v",
      "netns",
      "/run/netns/n",
      "ro",
      "/k",
      "rw",
      "/v",
      "dev",
      "/dev/null",
      "--",
      "/usr/bin/qemu",
      "-S",
    ],
  );
});
