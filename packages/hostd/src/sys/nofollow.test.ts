/**
 * Root's operations on names a jailed QEMU can replace (its VM dir, and the snapshot dirs its files move
 * to): a planted link to a "victim" file outside is refused, and the victim keeps its content, owner and
 * mode. Needs root (the victim belongs to another uid), as the daemon does.
 *   node --test packages/hostd/dist/sys/nofollow.test.js
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import { pidOf } from "../host.js";
import { Layout, type SnapMeta, readVmRecord, snapRef } from "../records.js";
import { freezeParent, freezeRam } from "../snapshot/layers.js";
import { type SnapshotStore, cloneRam } from "../snapshot/store.js";
import { tempDataDir, victimFile } from "../testutil.js";
import { sendState } from "../vmm/migration.js";
import { QmpClient } from "../vmm/qmp.js";
import { Mutex, writeJsonAtomic } from "./fs.js";
import { connectUnix, openRegular, readTail, viaFd } from "./nofollow.js";
import { spawnDetached } from "./spawn.js";

const dir = tempDataDir("nofollow");
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
/** A fresh VM-like dir and a victim beside it. */
function setup(): { d: string; victim: ReturnType<typeof victimFile> } {
  const d = join(dir, `vm${++n}`);
  mkdirSync(d);
  return { d, victim: victimFile(dir, `victim${n}`) };
}

test("openRegular: a link or a FIFO is refused at once (no hang), a regular file opens", async () => {
  const { d, victim } = setup();
  symlinkSync(victim.path, join(d, "link"));
  execFileSync("mkfifo", [join(d, "fifo")]);
  await assert.rejects(openRegular(join(d, "link"), 0), /not a regular file/);
  await assert.rejects(openRegular(join(d, "fifo"), 0), /not a regular file/);
  await assert.rejects(readTail(join(d, "fifo"), 10), /not a regular file/);
  writeFileSync(join(d, "file"), "0123456789");
  assert.equal(await readTail(join(d, "file"), 4), "6789");
  assert.equal(await readTail(join(d, "missing"), 4), "");
  assert.equal(
    await viaFd(join(d, "file"), async (p) => readFileSync(p, "utf8")),
    "0123456789",
    "the /proc fd path names the opened file",
  );
  victim.assertIntact("after the refused opens");
});

test("pidOf: a qemu.pid that is a link is not read", async () => {
  const { d, victim } = setup();
  writeFileSync(victim.path, "4321\n");
  symlinkSync(victim.path, join(d, "qemu.pid"));
  assert.equal(await pidOf(d), 0);
});

test("readVmRecord: a vm.json that is a link to a host file is no record", async () => {
  const { d } = setup();
  const elsewhere = join(dir, `record${n}.json`);
  writeFileSync(elsewhere, JSON.stringify({ sandbox_id: "not-this-vm" }));
  symlinkSync(elsewhere, join(d, "vm.json"));
  assert.equal(await readVmRecord(d), undefined);
});

test("writeJsonAtomic: a link planted at the temp name is replaced, not written through", async () => {
  const { d, victim } = setup();
  const rec = join(d, "vm.json");
  // The temp names are <record>.tmp-<pid>-<n>: plant the next ones.
  for (let i = 1; i <= 200; i++) symlinkSync(victim.path, `${rec}.tmp-${process.pid}-${i}`);
  await writeJsonAtomic(rec, { ok: true });
  victim.assertIntact("after the record write");
  assert.ok(lstatSync(rec).isFile(), "the record is a file of its own");
  assert.deepEqual(JSON.parse(readFileSync(rec, "utf8")), { ok: true });
});

test("spawnDetached: a log path that is a link is refused, its target not appended to", async () => {
  const { d, victim } = setup();
  symlinkSync(victim.path, join(d, "qemu.log"));
  await assert.rejects(
    spawnDetached("/bin/echo", ["planted"], { logPath: join(d, "qemu.log") }),
    /regular file/,
  );
  victim.assertIntact("after the refused launch");
});

test("cloneRam: a snapshot's ram that is a link is refused, nothing copied out of its target", async () => {
  const { d, victim } = setup();
  symlinkSync(victim.path, join(d, "ram"));
  for (const reflink of [false, true]) {
    const dst = join(d, `clone-${reflink}`);
    await assert.rejects(cloneRam({ reflink } as SnapshotStore, join(d, "ram"), dst), /not a regular file/);
    assert.equal(existsSync(dst), false);
  }
  victim.assertIntact("after the refused clones");
});

test("sendState: a socket name that is a link to another socket is not connected to", async () => {
  const { d } = setup();
  const other = join(dir, `other${n}.sock`);
  let connected = false;
  const srv = createServer((c) => {
    connected = true;
    c.on("error", () => undefined);
    c.resume();
  });
  await new Promise<void>((r) => srv.listen(other, r));
  try {
    symlinkSync(other, join(d, "mig.sock"));
    writeFileSync(join(d, "state"), "the state");
    await assert.rejects(sendState(join(d, "mig.sock"), join(d, "state"), 200), /not a socket/);
    assert.equal(connected, false);
  } finally {
    srv.close();
  }
});

/** The host parts the freezes use: the layout and the lock layer gc shares with them. */
function freezeHost(): { layout: Layout; layerLock: Mutex } {
  const data = join(dir, `data${++n}`);
  const layout = new Layout(data, join(data, "cache"));
  for (const p of [layout.layers, layout.ramLayers, layout.snaps]) mkdirSync(p, { recursive: true });
  return { layout, layerLock: new Mutex() };
}

function snapWith(layout: Layout, id: string): { sdir: string; meta: SnapMeta } {
  const sdir = layout.snapDir(id);
  mkdirSync(sdir);
  const meta = { snapshot_id: id, sandbox_id: "sb", chain: [] } as unknown as SnapMeta;
  return { sdir, meta };
}

test("freezeRam: a snapshot's ram that is a link does not make its target root's and 0666", async () => {
  const host = freezeHost();
  const { sdir, meta } = snapWith(host.layout, "snap-ram");
  const victim = victimFile(dir, `victim-ram${n}`);
  symlinkSync(victim.path, join(sdir, "ram"));
  // biome-ignore lint/suspicious/noExplicitAny: the freeze uses only the layout and the freezing set
  await assert.rejects(freezeRam(host as any, meta), /not a regular file/);
  victim.assertIntact("after the refused RAM freeze");
  assert.equal(meta.ram_layer, undefined);
});

test("freezeParent: a snapshot's disk that is a link does not make its target root's and 0444", async () => {
  const host = freezeHost();
  const { sdir, meta } = snapWith(host.layout, "snap-disk");
  const victim = victimFile(dir, `victim-disk${n}`);
  symlinkSync(victim.path, join(sdir, "disk.qcow2"));
  // biome-ignore lint/suspicious/noExplicitAny: the freeze uses only the layout and the freezing set
  await assert.rejects(freezeParent(host as any, meta), /not a regular file/);
  victim.assertIntact("after the refused disk freeze");
  assert.equal(meta.frozen, undefined);
});

test("connectUnix and QMP: a socket is connected to, a link to another socket is not", async () => {
  const { d } = setup();
  const other = join(dir, `qmp${n}.sock`);
  let connections = 0;
  const srv = createServer((c) => {
    connections++;
    c.on("error", () => undefined);
    c.end('{"QMP": {}}\n');
  });
  await new Promise<void>((r) => srv.listen(other, r));
  try {
    const ok = connectUnix(other);
    await new Promise<void>((resolve, reject) => ok.once("connect", resolve).once("error", reject));
    ok.destroy();
    assert.equal(connections, 1, "a real socket is connected to");
    symlinkSync(other, join(d, "qmp.sock"));
    const bad = connectUnix(join(d, "qmp.sock"));
    await assert.rejects(
      new Promise((resolve, reject) => bad.once("connect", resolve).once("error", reject)),
      /not a socket/,
    );
    await assert.rejects(QmpClient.connect(join(d, "qmp.sock"), 100), /not a socket/);
    const missing = connectUnix(join(d, "missing.sock"));
    await assert.rejects(
      new Promise((resolve, reject) => missing.once("connect", resolve).once("error", reject)),
      { code: "ENOENT" },
    );
    assert.equal(connections, 1, "nothing connected through the link");
  } finally {
    srv.close();
  }
});

test("snapRef: a snapshot file that is a link does not report its target's size", async () => {
  const host = freezeHost();
  const { sdir, meta } = snapWith(host.layout, "snap-size");
  const big = join(dir, `big${n}`);
  writeFileSync(big, Buffer.alloc(1 << 20, 1));
  symlinkSync(big, join(sdir, "ram"));
  assert.equal((await snapRef(host.layout, meta)).size_bytes, 0);
});
