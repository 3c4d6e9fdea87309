/**
 * Frozen disk layers (layers/<id>.qcow2): a fork freezes its parent's top layer once, and every child and
 * the parent then back onto it. A frozen layer is never written again and is deleted once nothing backs
 * onto it.
 */
import { randomUUID } from "node:crypto";
import { chmod, chown, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Host } from "../host.js";
import { type SnapMeta, readSnapMeta, readVmRecord, writeSnapMeta } from "../records.js";
import { qemuImg } from "../sys/index.js";

/** Makes the parent's top layer immutable (once) and returns the frozen layer children back onto. */
export async function freezeParent(host: Host, meta: SnapMeta): Promise<{ base: string; chain: string[] }> {
  if (meta.frozen && meta.chain[0]) return { base: meta.chain[0], chain: meta.chain };
  const layer = join(host.layout.layers, `${randomUUID()}.qcow2`);
  host.freezing.add(layer);
  try {
    return await freezeInto(host.layout.snapDir(meta.snapshot_id), meta, layer);
  } finally {
    host.freezing.delete(layer);
  }
}

async function freezeInto(
  sdir: string,
  meta: SnapMeta,
  layer: string,
): Promise<{ base: string; chain: string[] }> {
  const top = join(sdir, "disk.qcow2");
  await rename(top, layer);
  try {
    // A frozen layer is shared by every fork and never written again: no VM's uid may own it (it was the
    // parent's writable top, owned by the parent's jail uid), and every jail reads it.
    await chown(layer, 0, 0);
    await chmod(layer, 0o444);
    await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer, top]);
  } catch (e) {
    await rename(layer, top);
    throw e;
  }
  const chain = [layer, ...meta.chain];
  const next: SnapMeta = { ...meta, chain, frozen: true };
  await writeSnapMeta(sdir, next);
  Object.assign(meta, next);
  return { base: layer, chain };
}

/** Every backing file a VM (running, pooled or on record) or a snapshot backs onto. */
export async function usedLayers(host: Host): Promise<Set<string>> {
  const { layout } = host;
  const used = new Set<string>();
  for (const v of host.vms.values()) for (const l of v.rec.chain) used.add(l);
  for (const name of await readdir(layout.vms).catch(() => [] as string[])) {
    const r = await readVmRecord(join(layout.vms, name));
    for (const l of r?.chain ?? []) used.add(l);
  }
  for (const name of await readdir(layout.snaps).catch(() => [] as string[])) {
    const m = await readSnapMeta(join(layout.snaps, name));
    if (!m && !name.endsWith(".tmp")) continue;
    for (const l of m?.chain ?? []) used.add(l);
  }
  return used;
}

/** Deletes frozen layers no VM or snapshot backs onto any more. */
export async function gcLayers(host: Host): Promise<void> {
  const { layout } = host;
  const used = await usedLayers(host);
  for (const name of await readdir(layout.layers).catch(() => [] as string[])) {
    const p = join(layout.layers, name);
    // A layer being frozen is not in any meta.json yet.
    if (used.has(p) || host.freezing.has(p)) continue;
    await rm(p, { force: true });
  }
}
