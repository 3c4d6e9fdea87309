/**
 * A warm snapshot's RAM file, on the snapshot store: the image cache (`<cache>/warm/`) is another
 * filesystem, so each restore from it would copy the RAM file (tens of ms for a 256 MiB guest). On a
 * reflink store the file is copied once per warm entry into `hostd/warm-ram/<key>-<ino>-<mtime>.ram`
 * (the name ties it to that very file: an entry rebuilt after eviction gets a copy of its own), and every
 * restore clones that copy (snapshot/store.ts `cloneRam`). Copies of entries gone from the cache are
 * deleted at start and whenever a newer copy of the same key is made.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Host } from "../host.js";
import type { Layout } from "../records.js";
import { SingleFlight } from "../sys/fs.js";
import { cpSparse } from "../sys/index.js";
import { viaFd } from "../sys/nofollow.js";

const copies = new SingleFlight<string>();

export function warmRamDir(layout: Layout): string {
  return join(layout.root, "warm-ram");
}

async function copyName(warm: string): Promise<string> {
  // Nanoseconds: an inode number may be reused by the entry's next capture, its mtime to the ns not.
  const s = await stat(join(warm, "ram"), { bigint: true });
  return `${basename(warm)}-${s.ino}-${s.mtimeNs}.ram`;
}

/** The RAM file a restore from `warm` clones or copies: the store's copy of it where the store clones. */
export async function warmRamSource(host: Host, warm: string): Promise<string> {
  if (!host.store.reflink) return join(warm, "ram");
  const dir = warmRamDir(host.layout);
  const name = await copyName(warm);
  const p = join(dir, name);
  if (existsSync(p)) return p;
  return copies.do(p, async () => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = `${p}.tmp-${randomUUID().slice(0, 8)}`;
    await viaFd(join(warm, "ram"), (from) => cpSparse(from, tmp));
    // Complete only under its final name: a crash leaves a `.tmp-` file, which the next start deletes.
    await rename(tmp, p);
    const key = `${basename(warm)}-`;
    for (const f of await readdir(dir))
      if (f.startsWith(key) && f !== name && !f.includes(".tmp-")) await rm(join(dir, f), { force: true });
    return p;
  });
}

/** At start: deletes copies whose warm entry is gone or was rebuilt, and copies a crash left half made. */
export async function gcWarmRam(layout: Layout): Promise<void> {
  const dir = warmRamDir(layout);
  const keep = new Set<string>();
  for (const key of await readdir(layout.warm).catch(() => [] as string[]))
    await copyName(layout.warmDir(key)).then(
      (n) => keep.add(n),
      () => undefined,
    );
  for (const f of await readdir(dir).catch(() => [] as string[]))
    if (!keep.has(f)) await rm(join(dir, f), { force: true });
}
