/**
 * Frozen disk layers (layers/<id>.qcow2): a fork freezes its parent's top layer once, and every child and
 * the parent then back onto it. A frozen layer is never written again and is deleted once nothing backs
 * onto it.
 *
 * Layer gc reads every reference (live VMs, then vms/, then snapshots/) and deletes what none named. That
 * is wrong only if, while it reads, a layer is made, or gains a reference in a place the scan has already
 * passed while its other references go before the scan reaches them. So gc runs under `host.layerLock`,
 * and so does every step that could do either ({@link withLayerLock}):
 *   - a freeze: a new file, named in the parent's meta.json before the lock is let go;
 *   - a fork writing its child's record (vm.json, or a `start_paused` child's meta.json): a copy of the
 *     parent's chain and RAM layer, written while the parent's snapshot lock still keeps the parent's own
 *     reference, which a destroy or a resume may drop at any time after;
 *   - a resume dropping its snapshot dir: the resumed VM's record, which took its references over, may
 *     have been written after gc read vms/.
 * Then every reference a layer has once gc ends either existed all through the scan (and was seen), or
 * was made after it, from one that existed all through it. A pause needs no lock: its snapshot's
 * meta.json names the VM's layers before the VM leaves `host.vms`, and gc reads snapshots last. The lock
 * is never held across a VM's cleanup (which runs gc itself) and is taken inside a snapshot lock, never
 * the other way round.
 */
import { randomUUID } from "node:crypto";
import { link, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Host } from "../host.js";
import { type SnapMeta, readSnapMeta, readVmRecord, writeSnapMeta } from "../records.js";
import { fsyncDir } from "../sys/fs.js";
import { qemuImg } from "../sys/index.js";
import { chmodRegular, ownRegular } from "../sys/nofollow.js";

/** Makes the parent's top layer immutable (once) and returns the frozen layer children back onto. */
export async function freezeParent(host: Host, meta: SnapMeta): Promise<{ base: string; chain: string[] }> {
  if (meta.frozen && meta.chain[0]) return { base: meta.chain[0], chain: meta.chain };
  const layer = join(host.layout.layers, `${randomUUID()}.qcow2`);
  return withLayerLock(host, () => freezeInto(host.layout.snapDir(meta.snapshot_id), meta, layer));
}

/** Runs `fn` with layer gc held off (the header says which steps must). */
export function withLayerLock<T>(host: Pick<Host, "layerLock">, fn: () => Promise<T>): Promise<T> {
  return host.layerLock.run(fn);
}

/**
 * Crash-safe in this order: the layer is a hard link to the top (the top's data is untouched; its owner
 * and mode are the layer's until the overlay replaces it), a new empty overlay is made beside it,
 * meta.json names the layer, then the overlay replaces the top. A crash
 * before meta.json leaves a layer nothing names (gc removes the link; the top still holds the data); after
 * it, the top is either the old full layer (still correct, only not empty) or the new overlay on it.
 */
async function freezeInto(
  sdir: string,
  meta: SnapMeta,
  layer: string,
): Promise<{ base: string; chain: string[] }> {
  const top = join(sdir, "disk.qcow2");
  const next = `${top}.new`;
  await rm(next, { force: true });
  // The layer is the top's inode: the chown and chmod below change the top too, until the overlay
  // replaces it; a freeze that fails gives the top back its owner and mode (finishFreeze after a crash).
  const was = await stat(top);
  await link(top, layer);
  try {
    // A frozen layer is shared by every fork and never written again: no VM's uid may own it (it was the
    // parent's writable top, owned by the parent's jail uid), and every jail reads it.
    // Through a descriptor: a link a QEMU planted as the top (link(2) links the link itself) is refused.
    await ownRegular(layer, 0, 0, 0o444);
    await fsyncDir(dirname(layer));
    await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer, next]);
  } catch (e) {
    await rm(layer, { force: true });
    await rm(next, { force: true });
    // Through a descriptor too; a top that is not a regular file was never changed (the freeze refused it).
    await ownRegular(top, was.uid, was.gid, was.mode & 0o7777).catch(() => undefined);
    throw e;
  }
  const chain = [layer, ...meta.chain];
  const updated: SnapMeta = { ...meta, chain, frozen: true };
  await writeSnapMeta(sdir, updated);
  await rename(next, top);
  await fsyncDir(sdir);
  Object.assign(meta, updated);
  return { base: layer, chain };
}

/**
 * Freezes the snapshot's RAM file for forks (once): a hard link in ram-layers/, named in meta.json before
 * any fork maps it (a crash before that leaves a link nothing names, which gc removes). Root owns it, and
 * every fork's jail uid may open it read-write (QEMU 7.2 opens a share=off backing file O_RDWR, though it
 * never writes it: only 8.2's `rom=off` maps a read-only file writably); the dir is 0700, and a jail mounts
 * only its own parent's layer.
 */
export async function freezeRam(host: Host, meta: SnapMeta): Promise<string> {
  if (meta.ram_layer) return meta.ram_layer;
  const layer = join(host.layout.ramLayers, `${randomUUID()}.ram`);
  return withLayerLock(host, async () => {
    const sdir = host.layout.snapDir(meta.snapshot_id);
    await link(join(sdir, "ram"), layer);
    // A planted link as `ram` must not make its target everyone's to write (0666).
    await ownRegular(layer, 0, 0, 0o666).catch(async (e) => {
      await rm(layer, { force: true });
      throw e;
    });
    await fsyncDir(host.layout.ramLayers);
    const updated: SnapMeta = { ...meta, ram_layer: layer };
    await writeSnapMeta(sdir, updated);
    Object.assign(meta, updated);
    return layer;
  });
}

/** Every backing file (disk layer or RAM layer) a VM (running, pooled or on record) or a snapshot uses. */
export async function usedLayers(host: Host): Promise<Set<string>> {
  const { layout } = host;
  const used = new Set<string>();
  const add = (r: { chain?: string[]; ram_base?: string; ram_layer?: string } | undefined) => {
    for (const l of r?.chain ?? []) used.add(l);
    if (r?.ram_base) used.add(r.ram_base);
    if (r?.ram_layer) used.add(r.ram_layer);
  };
  for (const v of host.vms.values()) add(v.rec);
  for (const name of await readdir(layout.vms).catch(() => [] as string[]))
    add(await readVmRecord(join(layout.vms, name)));
  await gcHooks.between?.("vms");
  for (const name of await readdir(layout.snaps).catch(() => [] as string[])) {
    const m = await readSnapMeta(join(layout.snaps, name));
    if (!m && !name.endsWith(".tmp")) continue;
    add(m);
  }
  return used;
}

/**
 * Test-only: awaited between gc's passes (after the VM records; after the whole scan), where layers.test.ts
 * interleaves a freeze or a hand-over. Unset in the daemon.
 */
export const gcHooks: { between?: (pass: "vms" | "scan") => Promise<void> } = {};

/** Deletes frozen disk and RAM layers no VM or snapshot uses any more (under the layer lock: see the header). */
export function gcLayers(host: Host): Promise<void> {
  return withLayerLock(host, async () => {
    const { layout } = host;
    const used = await usedLayers(host);
    await gcHooks.between?.("scan");
    for (const dir of [layout.layers, layout.ramLayers]) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const p = join(dir, name);
        if (!used.has(p)) await rm(p, { force: true });
      }
    }
  });
}

/**
 * Re-adoption's half of freezeInto's order. If meta.json already names the layer and the top is still
 * that layer's inode, a crash left the overlay `disk.qcow2.new` beside it, which takes the top's place.
 * Otherwise the freeze never happened as far as meta.json knows: an overlay goes, and a top the freeze
 * made read-only (a crash after its chmod, with or without the overlay made) is writable again (its
 * owner is the VM's jail uid again at the next start: vmm/jail.ts), or its QEMU could never open it.
 */
export async function finishFreeze(sdir: string, meta: SnapMeta): Promise<void> {
  const top = join(sdir, "disk.qcow2");
  const next = `${top}.new`;
  const n = await stat(next).catch(() => undefined);
  // No top: checkFiles sets the snapshot aside.
  const t = await stat(top).catch(() => undefined);
  if (!t) return;
  const layer = meta.chain[0] ? await stat(meta.chain[0]).catch(() => undefined) : undefined;
  if (meta.frozen && layer && layer.ino === t.ino && layer.dev === t.dev) {
    if (!n) return;
    await rename(next, top);
  } else {
    const readOnly = (t.mode & 0o200) === 0;
    if (!n && !readOnly) return;
    if (n) await rm(next, { force: true });
    await chmodRegular(top, 0o600);
  }
  await fsyncDir(sdir);
}
