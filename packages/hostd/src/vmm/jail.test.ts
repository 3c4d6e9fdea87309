import assert from "node:assert/strict";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Host } from "../host.js";
import { convertTop } from "../images/template.js";
import { qemuImg } from "../sys/index.js";
import { victimFile } from "../testutil.js";
import {
  DEFAULT_UID_BASE,
  backingChain,
  chainSpec,
  diskChain,
  jailArgv,
  jailIds,
  ownVmFiles,
} from "./jail.js";

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

// A resumed or forked VM brings files an earlier (possibly compromised) QEMU could replace with links.
test("ownVmFiles: hands over regular files, and refuses a planted link without touching its target", async () => {
  const d = mkdtempSync(join(tmpdir(), "jail-own-"));
  const ids = { uid: 200_123, gid: 200_124 };
  try {
    const vm = join(d, "vm");
    const ram = join(vm, "ram");
    const disk = join(vm, "disk.qcow2");
    const con = join(vm, "console.log");
    mkdirSync(vm);
    writeFileSync(disk, "disk", { mode: 0o644 });
    // an older layout's QEMU made `run` a link: removed, its target untouched
    const elsewhere = mkdtempSync(join(tmpdir(), "jail-run-"));
    symlinkSync(elsewhere, join(vm, "run"));
    await ownVmFiles(vm, { ram, others: [disk], create: [con] }, ids);
    const run = join(vm, "run");
    for (const f of [ram, disk, con, run])
      assert.deepEqual([statSync(f).uid, statSync(f).gid], [200_123, 200_124], f);
    assert.equal(statSync(ram).mode & 0o777, 0o600);
    assert.equal(statSync(con).mode & 0o777, 0o600, "the console log is made for QEMU");
    assert.ok(lstatSync(run).isDirectory() && (statSync(run).mode & 0o777) === 0o700, "run/ is QEMU's");
    // the VM dir stays root's: QEMU opens what it is given, creates names only in run/
    assert.deepEqual([statSync(vm).uid, statSync(vm).gid, statSync(vm).mode & 0o777], [0, 0, 0o711]);
    assert.deepEqual([statSync(elsewhere).uid, statSync(elsewhere).mode & 0o777], [0, 0o700]);
    rmSync(elsewhere, { recursive: true });

    const v1 = victimFile(d, "victim-ram");
    rmSync(ram);
    symlinkSync(v1.path, ram);
    await assert.rejects(ownVmFiles(vm, { ram, others: [disk] }, ids), /not a regular file/);
    v1.assertIntact("a planted ram link");

    const v2 = victimFile(d, "victim-disk");
    rmSync(ram);
    rmSync(disk);
    symlinkSync(v2.path, disk);
    await assert.rejects(ownVmFiles(vm, { ram, others: [disk, con] }, ids), /not a regular file/);
    v2.assertIntact("a planted disk link");

    const v3 = victimFile(d, "victim-dangling");
    rmSync(disk);
    rmSync(ram);
    rmSync(v3.path);
    symlinkSync(v3.path, ram);
    await assert.rejects(ownVmFiles(vm, { ram, others: [] }, ids), /not a regular file/);
    assert.throws(() => lstatSync(v3.path), /ENOENT/, "a dangling link's target is not created");
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

/** A store dir with a raw bottom (`base.ext4`, first bytes "GOOD") and `vm/top.qcow2` over it. */
async function chainFixture(d: string): Promise<{ store: string; base: string; top: string }> {
  const store = join(d, "store");
  mkdirSync(join(d, "vm"), { recursive: true });
  mkdirSync(store);
  const base = join(store, "base.ext4");
  writeFileSync(base, Buffer.concat([Buffer.from("GOOD"), Buffer.alloc(65536 - 4)]));
  const top = join(d, "vm", "top.qcow2");
  await qemuImg(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, top]);
  return { store, base, top };
}

/** What a compromised QEMU can do to its writable top layer: name another backing file in its header. */
function rewriteBacking(top: string, backing: string): Promise<unknown> {
  return qemuImg(["rebase", "-u", "-q", "-F", "raw", "-b", backing, top]);
}

test("backingChain: a backing name a QEMU wrote is refused outside the daemon's dirs, through a link or ..", async () => {
  const d = mkdtempSync(join(tmpdir(), "jail-chain-"));
  try {
    const { store, base, top } = await chainFixture(d);
    assert.deepEqual(await backingChain(top, [store]), [base], "the daemon's own chain passes");
    assert.deepEqual(await diskChain(top, [store]), [
      { path: top, format: "qcow2" },
      { path: base, format: "raw" },
    ]);
    const victim = victimFile(d, "victim.ext4");
    const planted: [string, string][] = [
      ["a host file", victim.path],
      ["a link inside the store to a host file", join(store, "link.ext4")],
      ["a name climbing out of the store", `${store}/../victim.ext4`],
      ["a store file not named as a layer", join(store, "state")],
    ];
    symlinkSync(victim.path, join(store, "link.ext4"));
    writeFileSync(join(store, "state"), "");
    for (const [what, name] of planted) {
      await rewriteBacking(top, name);
      await assert.rejects(backingChain(top, [store]), /refused/, what);
    }
    victim.assertIntact("after the refused chains");
    // The top itself a link (planted in the VM dir): refused before any header is read.
    rmSync(top);
    symlinkSync(base, top);
    await assert.rejects(backingChain(top, [store]), /not a regular file/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("convertTop: qemu-img reads the checked chain, not a backing name rewritten after the check", async () => {
  const d = mkdtempSync(join(tmpdir(), "jail-convert-"));
  try {
    const { store, base, top } = await chainFixture(d);
    const host = { diskRoots: () => [store] } as unknown as Host;
    const out = join(d, "out.raw");
    await convertTop(host, top, out);
    assert.equal(readFileSync(out).subarray(0, 4).toString(), "GOOD");
    // A header naming a host file: the commit is refused, nothing read from it.
    const victim = victimFile(d, "victim.ext4");
    writeFileSync(victim.path, "EVIL");
    await rewriteBacking(top, victim.path);
    await assert.rejects(convertTop(host, join(d, "vm", "top.qcow2"), join(d, "out2.raw")), /refused/);
    // Rewritten between the check and qemu-img's open: the spec names every layer, no header is followed.
    await rewriteBacking(top, base);
    const chain = await diskChain(top, [store]);
    await rewriteBacking(top, victim.path);
    const out3 = join(d, "out3.raw");
    await qemuImg(["convert", "-U", "-q", chainSpec(chain), "-O", "raw", out3]);
    assert.equal(readFileSync(out3).subarray(0, 4).toString(), "GOOD");
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
