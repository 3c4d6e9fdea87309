/**
 * A fork maps its parent's RAM privately instead of copying it (snapshot/fork.ts, vmm/devices/memory.ts),
 * on real VMs: the frozen RAM layer is never written while a fork maps it — not by the parent resumed
 * meanwhile, which gets a copy — a fork pauses and resumes with its memory (the RAM then travels in the
 * state), and the layer goes once nothing names it.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { LocalHostDaemon } from "./daemon.js";
import { TRASH_PREFIX } from "./records.js";
import { TEST_IMAGE, openOpts, sh, sleep, spec, tempDataDir } from "./testutil.js";

const dataDir = tempDataDir("forkram");
const ramLayers = join(dataDir, "hostd", "ram-layers");

const vmRecord = (id: string) =>
  JSON.parse(readFileSync(join(dataDir, "hostd", "vms", id, "vm.json"), "utf8")) as { ram_base?: string };
// 48 MiB of new pages in the guest (tmpfs): what would reach the layer if anything mapped it shared.
const DIRTY = "head -c 50331648 /dev/zero | tr '\\0' x > /tmp/big && sync";

test("a fork maps the parent's RAM layer; the parent resumed meanwhile and the fork's pause leave it intact", async () => {
  const d = await LocalHostDaemon.open({ ...openOpts(dataDir), forkRam: "map" });
  try {
    await d.ensureImage(TEST_IMAGE);
    await forkMapsRam(d);
  } finally {
    for (const v of await d.list()) await d.destroy(v.sandbox_id).catch(() => undefined);
    await d.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

async function forkMapsRam(d: LocalHostDaemon): Promise<void> {
  const p = spec({ hostname: "ram-parent" });
  await d.create(p);
  await sh(d, p.sandbox_id, "echo before-fork > /tmp/mark");
  const snap = await d.pause(p.sandbox_id);
  const k = spec({ hostname: "ram-kid" });
  await d.fork(snap, k);
  try {
    const base = vmRecord(k.sandbox_id).ram_base;
    assert.ok(base?.startsWith(ramLayers), `the fork maps a RAM layer (${base})`);
    assert.ok(!existsSync(join(dataDir, "hostd", "vms", k.sandbox_id, "ram")), "the fork copied the RAM");
    assert.deepEqual(readdirSync(ramLayers), [base?.slice(ramLayers.length + 1)]);

    // The parent runs on a copy: what it writes never reaches the pages the fork has not written yet.
    await d.resume(snap, p);
    assert.equal(vmRecord(p.sandbox_id).ram_base, undefined);
    await sh(d, p.sandbox_id, `echo parent-after > /tmp/mark; ${DIRTY}`);
    assert.equal((await sh(d, k.sandbox_id, "cat /tmp/mark")).trim(), "before-fork");
    assert.equal((await sh(d, p.sandbox_id, "cat /tmp/mark")).trim(), "parent-after");

    // The fork pauses (its RAM into the state) and resumes into a RAM file of its own, memory intact.
    await sh(d, k.sandbox_id, `echo kid-only > /tmp/kid; ${DIRTY}`);
    const ks = await d.pause(k.sandbox_id);
    await d.resume(ks, k);
    assert.equal(vmRecord(k.sandbox_id).ram_base, undefined);
    assert.equal((await sh(d, k.sandbox_id, "cat /tmp/mark /tmp/kid")).trim(), "before-fork\nkid-only");
    assert.equal((await sh(d, k.sandbox_id, "hostname")).trim(), "ram-kid");
    // …and pauses and resumes again the ordinary way.
    const ks2 = await d.pause(k.sandbox_id);
    await d.resume(ks2, k);
    assert.equal((await sh(d, k.sandbox_id, "cat /tmp/kid")).trim(), "kid-only");
    // No fork maps the layer any more, and its snapshot is gone (resumed): collected with the disk layers
    // at the next destroy, once the paused fork's old dir (whose record named it) is gone too.
    const vms = join(dataDir, "hostd", "vms");
    for (let i = 0; i < 100 && readdirSync(vms).some((n) => n.startsWith(TRASH_PREFIX)); i++)
      await sleep(100);
    await d.destroy(p.sandbox_id);
    assert.deepEqual(readdirSync(ramLayers), []);
  } finally {
    for (const id of [k.sandbox_id, p.sandbox_id]) await d.destroy(id).catch(() => undefined);
  }
}
