/**
 * kill -9 of the host daemon, then a new one re-adopts the running VMs: the daemon runs in a child Node
 * process, creates a VM and is killed with SIGKILL; the VM must keep running and a new daemon on the same
 * data dir must list it, exec in it, and never start it twice.
 *
 *   node --test --test-concurrency=1 packages/hostd/dist/readopt.vm.test.js
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { HostEvent } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "./daemon.js";
import { TRASH_PREFIX } from "./records.js";
import { TEST_IMAGE, hostFootprint, openOpts, sh, spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("readopt");
const trashDir = tempDataDir("readopt-trash");
let d: LocalHostDaemon | undefined;

after(async () => {
  if (d) {
    for (const v of await d.list()) await d.destroy(v.sandbox_id);
    await d.close();
  }
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(trashDir, { recursive: true, force: true });
});

/** Runs a daemon in a child process that creates `ids` and reports them, then waits to be killed. */
function childDaemon(
  ids: string[],
): Promise<{ kill: () => Promise<void>; created: { sandbox_id: string; pid: number }[] }> {
  const hostdUrl = new URL("./daemon.js", import.meta.url).href;
  const utilUrl = new URL("./testutil.js", import.meta.url).href;
  const specs = ids.map((id) => spec({ sandbox_id: id, image: TEST_IMAGE }));
  const code = `
    const { LocalHostDaemon } = await import(${JSON.stringify(hostdUrl)});
    const { openOpts } = await import(${JSON.stringify(utilUrl)});
    const d = await LocalHostDaemon.open(openOpts(${JSON.stringify(dataDir)}));
    for (const s of ${JSON.stringify(specs)}) await d.create(s);
    const out = await d.list();
    await d.exec(out[0].sandbox_id, { argv: ["sh", "-c", "echo before-kill > /tmp/mark"] });
    process.stdout.write(JSON.stringify(out) + "\\n");
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], {
    stdio: ["ignore", "pipe", "inherit"],
    cwd: fileURLToPath(new URL(".", import.meta.url)),
  });
  return new Promise((resolve, reject) => {
    let buf = "";
    child.stdout.on("data", (c: Buffer) => {
      buf += c.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        resolve({
          created: JSON.parse(buf.slice(0, nl)) as { sandbox_id: string; pid: number }[],
          kill: () =>
            new Promise<void>((r) => {
              child.once("exit", () => r());
              child.kill("SIGKILL");
            }),
        });
      }
    });
    child.on("exit", (code) => reject(new Error(`child daemon exited early (${code})`)));
  });
}

test("kill -9 of the host daemon, then a new one re-adopts running VMs", { timeout: 600_000 }, async () => {
  const ids = [`ra-${process.pid}-a`, `ra-${process.pid}-b`];
  const child = await childDaemon(ids);
  assert.equal(child.created.length, 2);
  await child.kill();

  // The VMs outlived their daemon.
  const fp = hostFootprint(dataDir);
  for (const c of child.created) assert.ok(fp.qemu.includes(c.pid), `QEMU ${c.pid} died with the daemon`);

  // One VM dies while no daemon runs: the next daemon must report it, not resurrect it.
  const dead = child.created[1];
  assert.ok(dead);
  process.kill(dead.pid, "SIGKILL");
  await new Promise((r) => setTimeout(r, 300));

  d = await LocalHostDaemon.open(openOpts(dataDir));
  const events: HostEvent[] = [];
  d.onEvent((e) => events.push(e));
  await new Promise((r) => setTimeout(r, 50));

  const listed = await d.list();
  const alive = child.created[0];
  assert.ok(alive);
  assert.deepEqual(
    listed.map((v) => [v.sandbox_id, v.pid]),
    [[alive.sandbox_id, alive.pid]],
    "the live VM is re-adopted with the same QEMU process (not restarted); the dead one is not",
  );
  assert.ok(events.some((e) => e.type === "vm_exited" && e.sandbox_id === dead.sandbox_id));
  assert.equal((await sh(d, alive.sandbox_id, "cat /tmp/mark")).trim(), "before-kill");
  assert.equal((await sh(d, alive.sandbox_id, "echo after-readopt")).trim(), "after-readopt");

  // A second restart (graceful this time) re-adopts again without double-starting.
  await d.close();
  d = await LocalHostDaemon.open(openOpts(dataDir));
  const again = await d.list();
  assert.deepEqual(
    again.map((v) => v.pid),
    [alive.pid],
  );
  assert.equal((await sh(d, alive.sandbox_id, "echo third")).trim(), "third");
  await assert.rejects(
    d.create(spec({ sandbox_id: alive.sandbox_id })),
    (e: Error & { code?: string }) => e.code === "conflict",
  );

  await d.destroy(alive.sandbox_id);
  const left = hostFootprint(dataDir);
  assert.deepEqual(left.qemu, []);
  assert.deepEqual(left.vmFiles, []);
});

test("records a crash left naming a slot a live VM holds now (a pause's old dir, a destroyed VM's, one still starting) leave that VM's network alone", async () => {
  let d2 = await LocalHostDaemon.open(openOpts(trashDir));
  const s = spec();
  await d2.create(s);
  const vms = join(trashDir, "hostd", "vms");
  const rec = JSON.parse(readFileSync(join(vms, s.sandbox_id, "vm.json"), "utf8")) as { slot: number };
  await d2.close();
  // A pause frees its slot before it removes its old dir: a crash in between leaves that dir's record,
  // and the slot may be another VM's by the next start (here: the live VM's own).
  const trash = join(vms, `${TRASH_PREFIX}crashleft`);
  mkdirSync(trash);
  writeFileSync(
    join(trash, "vm.json"),
    JSON.stringify({ ...rec, sandbox_id: "paused-then-crashed", launch_dir: undefined }),
  );
  // A record under a live name whose QEMU is gone (a destroy whose crash came between freeing the slot and
  // renaming the dir, before the dir went first), and one of a create that never answered: both are
  // cleaned, and the slot they name is not torn down.
  const left = ["destroyed", "starting"].map((state) => {
    const id = spec().sandbox_id;
    mkdirSync(join(vms, id));
    writeFileSync(
      join(vms, id, "vm.json"),
      JSON.stringify({ ...rec, sandbox_id: id, state: state === "starting" ? "starting" : "running" }),
    );
    return join(vms, id);
  });
  d2 = await LocalHostDaemon.open(openOpts(trashDir));
  try {
    assert.ok(!existsSync(trash), "the old dir is removed");
    for (const dir of left) assert.ok(!existsSync(dir), `${dir} is removed`);
    assert.deepEqual(
      (await d2.list()).map((v) => v.sandbox_id),
      [s.sandbox_id],
    );
    assert.ok(existsSync(`/run/netns/csb-${rec.slot}`), "the live VM's namespace is left alone");
    assert.equal((await sh(d2, s.sandbox_id, "echo up")).trim(), "up");
    // Both ends of the slot's veth (teardown deletes them with the namespace).
    assert.doesNotThrow(() => execFileSync("ip", ["link", "show", `csbv${rec.slot}`], { stdio: "ignore" }));
    assert.doesNotThrow(() =>
      execFileSync("ip", ["-n", `csb-${rec.slot}`, "link", "show", "v0"], { stdio: "ignore" }),
    );
  } finally {
    await d2.destroy(s.sandbox_id);
    await d2.close();
  }
});
