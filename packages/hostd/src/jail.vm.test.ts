/**
 * Every QEMU runs jailed (vmm/jail.ts): read from /proc what the kernel says about each VMM process of a
 * created, a resumed and a forked VM — its uid/gid, seccomp, no_new_privs, capabilities, pid namespace
 * and root directory.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { test } from "node:test";
import { LocalHostDaemon } from "./index.js";
import { TEST_IMAGE, openOpts, sh, spec, tempDataDir } from "./testutil.js";
import { jailIds } from "./vmm/jail.js";

const dataDir = tempDataDir("jail");

function vmDir(id: string): string {
  return join(dataDir, "hostd", "vms", id);
}

function statusField(status: string, name: string): string {
  const m = new RegExp(`^${name}:[ \\t]*(.*)$`, "m").exec(status);
  assert.ok(m, `no ${name} in /proc/<pid>/status`);
  return (m[1] ?? "").trim();
}

/** The jail as /proc shows it, for the QEMU serving sandbox `id`. */
function assertJailed(id: string): void {
  const pid = Number(readFileSync(join(vmDir(id), "qemu.pid"), "utf8").trim());
  assert.ok(pid > 1, `pidfile of ${id} names ${pid}`);
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  assert.match(readFileSync(`/proc/${pid}/cmdline`, "utf8"), /^qemu-system/);
  const rec = JSON.parse(readFileSync(join(vmDir(id), "vm.json"), "utf8")) as {
    slot: number;
    launch_dir?: string;
    ram_base?: string;
  };
  const ids = jailIds(rec.slot);
  // a pooled VM keeps the path it was launched at (its dir was renamed into place afterwards)
  const launch = rec.launch_dir ?? vmDir(id);
  assert.notEqual(ids.uid, 0);
  // real, effective, saved and filesystem ids: all the VM's own
  assert.equal(statusField(status, "Uid"), Array(4).fill(ids.uid).join("\t"));
  assert.equal(statusField(status, "Gid"), Array(4).fill(ids.gid).join("\t"));
  assert.equal(statusField(status, "Groups"), "");
  assert.equal(statusField(status, "Seccomp"), "2");
  assert.equal(statusField(status, "NoNewPrivs"), "1");
  for (const cap of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
    assert.equal(statusField(status, cap), "0000000000000000", `${cap} of ${id}'s QEMU`);
  // pid 1 of a pid namespace of its own
  assert.deepEqual(statusField(status, "NSpid").split(/\s+/), [String(pid), "1"]);
  // Its own root: not the host's (another filesystem), holding its VM dir but not the host's /etc, the
  // image cache's other files or any other VM's dir. (readlink of /proc/<pid>/root says "/" for a
  // pivot_root'ed root in another mount namespace, so the test looks at what that root is instead.)
  const root = `/proc/${pid}/root`;
  const host = statSync("/");
  const jail = statSync(`${root}/`);
  assert.ok(jail.dev !== host.dev || jail.ino !== host.ino, "QEMU's root is the host's /");
  assert.ok(existsSync(join(root, launch, "disk.qcow2")), "the VM dir is not in the jail");
  // its RAM: the VM dir's file, or a fork's parent's frozen RAM layer (mapped privately), and only that one
  const ram = rec.ram_base ?? join(launch, "ram");
  assert.ok(existsSync(join(root, ram)), `${id}'s RAM ${ram} is not in the jail`);
  if (rec.ram_base) {
    assert.deepEqual(readdirSync(join(root, dirname(rec.ram_base))), [basename(rec.ram_base)]);
    assert.ok(!existsSync(join(root, launch, "ram")), "a fork has a RAM file of its own");
  }
  assert.ok(!existsSync(join(root, "etc")), "the host's /etc is in the jail");
  assert.deepEqual(readdirSync(join(root, dirname(launch))), [basename(launch)]);
  // Its uid cannot change a name in the VM dir (vm.json, which re-adoption trusts, or a planted link): it
  // makes its sockets in run/ only. Tried in the jail's own mount namespace (its view of the dir), as that
  // uid with nothing else (setpriv, util-linux); the write into run/ shows the refusals are the dir's rule.
  const asQemu = (...argv: string[]) =>
    execFileSync(
      "nsenter",
      [
        `--target=${pid}`,
        "--mount",
        "--",
        "setpriv",
        `--reuid=${ids.uid}`,
        `--regid=${ids.gid}`,
        "--clear-groups",
        ...argv,
      ],
      { stdio: "pipe" },
    );
  asQemu("touch", join(launch, "run", "probe"));
  assert.ok(existsSync(join(vmDir(id), "run", "probe")));
  assert.throws(
    () => asQemu("mv", join(launch, "vm.json"), join(launch, "run", "vm.json")),
    /Permission denied/,
  );
  assert.throws(() => asQemu("ln", "-s", "/etc/shadow", join(launch, "console.log.1")), /Permission denied/);
  assert.throws(() => asQemu("rm", "-f", join(launch, "disk.qcow2")), /Permission denied/);
  assert.ok(readdirSync(join(vmDir(id), "run")).includes("qmp.sock"), "QEMU's sockets are in run/");
  rmSync(join(vmDir(id), "run", "probe"));
  // its TAP is its uid's to open, so QEMU needs no capability for it
  const tap = execFileSync("ip", ["-n", `csb-${rec.slot}`, "-d", "link", "show", "tap0"], {
    encoding: "utf8",
  });
  assert.match(tap, new RegExp(`\\buser ${ids.uid} group ${ids.gid}\\b`));
  const dev = readdirSync(join(root, "dev")).sort();
  assert.deepEqual(
    dev.filter((x) => !["kvm", "net", "null", "urandom"].includes(x)),
    [],
    `jail /dev: ${dev.join(" ")}`,
  );
}

test("the QEMU of a cold-booted, a created, a resumed and a forked VM is jailed", async () => {
  const d = await LocalHostDaemon.open({ ...openOpts(dataDir), forkRam: "map" });
  try {
    await d.ensureImage(TEST_IMAGE);
    await createForkResume(d);
  } finally {
    for (const v of await d.list()) await d.destroy(v.sandbox_id);
    await d.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

async function createForkResume(d: LocalHostDaemon): Promise<void> {
  // A cold boot (the first VM of a shape, the one a warm snapshot is taken of) has no RAM file yet.
  const cold = spec();
  await d.create(cold, { cold: true });
  assertJailed(cold.sandbox_id);
  assert.equal((await sh(d, cold.sandbox_id, "echo cold")).trim(), "cold");
  await d.destroy(cold.sandbox_id);

  const s = spec();
  await d.create(s);
  assertJailed(s.sandbox_id);
  assert.equal((await sh(d, s.sandbox_id, "echo ok")).trim(), "ok");

  const snap = await d.pause(s.sandbox_id);
  const kid = spec();
  await d.fork(snap, kid);
  assertJailed(kid.sandbox_id);
  assert.equal((await sh(d, kid.sandbox_id, "echo forked")).trim(), "forked");

  await d.resume(snap, s);
  assertJailed(s.sandbox_id);
  assert.equal((await sh(d, s.sandbox_id, "echo resumed")).trim(), "resumed");
}
