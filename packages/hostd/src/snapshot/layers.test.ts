/**
 * Layer gc against the steps that make a layer or hand a reference to one on (layers.ts's header): each
 * runs at the point of gc's scan where it once raced, through gc's test hook, and the layer must survive.
 * qemu-img is real; the host is the part of one gc reads.
 *   node --test packages/hostd/dist/snapshot/layers.test.js
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, chown, link, mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, afterEach, test } from "node:test";
import type { Host } from "../host.js";
import { Layout, type SnapMeta, readSnapMeta, writeSnapMeta, writeVmRecord } from "../records.js";
import { Mutex } from "../sys/fs.js";
import { qemuImg } from "../sys/index.js";
import { tempDataDir } from "../testutil.js";
import { finishFreeze, freezeParent, gcHooks, gcLayers } from "./layers.js";
import { dropSnapshot } from "./resume.js";

const dataDir = tempDataDir("layers");
after(() => rm(dataDir, { recursive: true, force: true }));
afterEach(() => {
  gcHooks.between = undefined;
});

let n = 0;
async function fakeHost() {
  const layout = new Layout(join(dataDir, `d${n++}`), join(dataDir, "cache"));
  for (const d of [layout.vms, layout.snaps, layout.layers, layout.ramLayers])
    await mkdir(d, { recursive: true });
  const host = { layout, vms: new Map(), layerLock: new Mutex() };
  return { layout, host, asHost: host as unknown as Host };
}

const base = {
  image: "i",
  image_hash: "h",
  vcpu: 1,
  mem_mib: 128,
  kernel: "k",
  cmdline: "",
  accel: "tcg" as const,
  tb_size_mib: 32,
};

function snap(id: string, chain: string[], frozen = false): SnapMeta {
  return {
    ...base,
    chain,
    frozen: frozen || undefined,
    snapshot_id: id,
    sandbox_id: `sb-${id}`,
    hostname: "h",
    disk_mib: 64,
    pause_ms: 1,
    created_at: new Date().toISOString(),
    state: "complete",
  };
}

/**
 * Starts `step` from inside gc (`started`: resolves once the step finished or waits on the layer lock,
 * which gc holds, so it cannot finish before gc does); gc then goes on and must not lose the layer either way.
 */
function during(lock: Mutex, step: () => Promise<unknown>) {
  let p: Promise<unknown> | undefined;
  return {
    started: () => {
      p ??= step();
      let settled = false;
      p.then(
        () => {
          settled = true;
        },
        () => {
          settled = true;
        },
      );
      return new Promise<void>((resolve) => {
        const poll = () => (settled || lock.pending > 1 ? resolve() : setImmediate(poll));
        poll();
      });
    },
    result: () => p,
  };
}

test("a freeze while gc runs keeps its layer: gc read meta.json before the freeze named the layer", async () => {
  const { layout, host, asHost } = await fakeHost();
  const sdir = layout.snapDir("P");
  await mkdir(sdir);
  await qemuImg(["create", "-q", "-f", "qcow2", join(sdir, "disk.qcow2"), "1M"]);
  await writeSnapMeta(sdir, snap("P", []));
  const meta = (await readSnapMeta(sdir))!;
  const step = during(host.layerLock, () => freezeParent(asHost, meta));
  gcHooks.between = async (pass) => {
    if (pass === "scan") await step.started();
  };
  await gcLayers(asHost);
  gcHooks.between = undefined;
  const { base: layer } = (await step.result()) as { base: string };
  assert.equal((await readSnapMeta(sdir))?.chain[0], layer, "the parent's meta.json names the layer");
  assert.ok(existsSync(layer), "the frozen layer (the parent's only copy of its disk) is still there");
  // The overlay the parent's top now is backs onto it: the parent's disk is whole.
  await qemuImg(["check", "-q", join(sdir, "disk.qcow2")]);
  await gcLayers(asHost);
  assert.ok(existsSync(layer), "and a later gc keeps it: the parent names it");
});

test("a resume handing its snapshot's layer to the VM while gc runs keeps the layer", async () => {
  const { layout, host, asHost } = await fakeHost();
  const layer = join(layout.layers, "L.qcow2");
  await writeFile(layer, "frozen layer data");
  const sdir = layout.snapDir("P");
  await mkdir(sdir);
  await writeSnapMeta(sdir, snap("P", [layer], true));
  // gc has read the live VMs and vms/ (the resumed VM was not there yet); the resume then writes the VM's
  // record, registers it and drops the snapshot before gc reads snapshots/.
  const step = during(host.layerLock, async () => {
    const vdir = layout.vmDir("sb-P");
    await mkdir(vdir);
    const rec = { ...base, chain: [layer], sandbox_id: "sb-P", state: "running" };
    await writeVmRecord(vdir, rec as never);
    host.vms.set("sb-P", { rec });
    await dropSnapshot(host, sdir);
  });
  gcHooks.between = async (pass) => {
    if (pass === "vms") await step.started();
  };
  await gcLayers(asHost);
  gcHooks.between = undefined;
  await step.result();
  assert.ok(!existsSync(sdir), "the snapshot was dropped");
  assert.ok(existsSync(layer), "the layer under the resumed VM is still there");
  assert.equal((await stat(layer)).size, "frozen layer data".length);
});

test("gc still deletes a layer nothing names", async () => {
  const { layout, asHost } = await fakeHost();
  const named = join(layout.layers, "named.qcow2");
  const orphan = join(layout.layers, "orphan.qcow2");
  const ramOrphan = join(layout.ramLayers, "orphan.ram");
  for (const f of [named, orphan, ramOrphan]) await writeFile(f, "x");
  const sdir = layout.snapDir("P");
  await mkdir(sdir);
  await writeSnapMeta(sdir, snap("P", [named], true));
  await gcLayers(asHost);
  assert.ok(existsSync(named));
  assert.ok(!existsSync(orphan));
  assert.ok(!existsSync(ramOrphan));
});

test("a freeze whose overlay cannot be made gives the parent's top back its owner and mode", async () => {
  const { layout, asHost } = await fakeHost();
  const sdir = layout.snapDir("P");
  await mkdir(sdir);
  const top = join(sdir, "disk.qcow2");
  // Not a qcow2: qemu-img cannot make an overlay on it (stands in for any qemu-img failure).
  await writeFile(top, "not a qcow2", { mode: 0o600 });
  await chown(top, 4321, 4321);
  await writeSnapMeta(sdir, snap("P", []));
  const meta = (await readSnapMeta(sdir))!;
  await assert.rejects(freezeParent(asHost, meta));
  const t = await stat(top);
  assert.deepEqual(
    [t.mode & 0o7777, t.uid, t.gid],
    [0o600, 4321, 4321],
    "the parent's jail can open it again",
  );
  assert.equal(t.nlink, 1, "no layer links it");
  assert.deepEqual(await readdir(layout.layers), []);
  assert.deepEqual((await readdir(sdir)).sort(), ["disk.qcow2", "meta.json"]);
  assert.equal((await readSnapMeta(sdir))?.frozen, undefined);
});

test("finishFreeze makes a top a crash left read-only writable again, and leaves a frozen layer alone", async () => {
  const { layout } = await fakeHost();
  const sdir = layout.snapDir("P");
  await mkdir(sdir);
  const top = join(sdir, "disk.qcow2");
  await writeFile(top, "full");
  // A crash after the freeze's chmod, before the overlay: the top is the unnamed layer's inode, 0444.
  const stray = join(layout.layers, "stray.qcow2");
  await link(top, stray);
  await chmod(top, 0o444);
  await finishFreeze(sdir, snap("P", []));
  assert.equal((await stat(top)).mode & 0o777, 0o600);
  assert.equal(await readFile(top, "utf8"), "full");
  // A top that is the layer meta.json names is never made writable (only its overlay would be).
  const named = join(layout.layers, "named.qcow2");
  await rm(stray);
  await link(top, named);
  await chmod(top, 0o444);
  await finishFreeze(sdir, snap("P", [named], true));
  assert.equal((await stat(named)).mode & 0o777, 0o444);
});
