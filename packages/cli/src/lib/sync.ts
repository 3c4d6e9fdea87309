import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

/** One regular file on either side: size, mtime (seconds) and content hash. */
export interface FileMeta {
  size: number;
  mtime: number;
  hash: string;
}

export type Listing = Map<string, FileMeta>;

/** Content hash of each path after the last successful sync of that path. */
export type Base = Map<string, string>;

export type Action =
  | { op: "push"; path: string }
  | { op: "pull"; path: string }
  | { op: "delete-remote"; path: string }
  | { op: "delete-local"; path: string }
  | { op: "conflict"; path: string; winner: "local" | "remote" }
  | { op: "same"; path: string; hash: string }
  | { op: "forget"; path: string };

/**
 * Three-way comparison of both sides against the last synced state. A side that still matches the
 * base did not change, so the other side's change (edit or delete) is applied to it. When both
 * changed — or there is no base yet (the first reconcile) — the newest mtime wins and the loser is
 * kept beside it as `<name>.conflict-<ts>`. Without a base nothing is ever deleted.
 */
export function plan(local: Listing, remote: Listing, base: Base): Action[] {
  const paths = new Set<string>([...local.keys(), ...remote.keys(), ...base.keys()]);
  const actions: Action[] = [];
  for (const p of [...paths].sort()) {
    const l = local.get(p);
    const r = remote.get(p);
    const b = base.get(p);
    if (l && r) {
      if (l.hash === r.hash) {
        if (b !== l.hash) actions.push({ op: "same", path: p, hash: l.hash });
      } else if (b === l.hash) actions.push({ op: "pull", path: p });
      else if (b === r.hash) actions.push({ op: "push", path: p });
      else actions.push({ op: "conflict", path: p, winner: r.mtime > l.mtime ? "remote" : "local" });
    } else if (l) {
      actions.push(
        b !== undefined && b === l.hash ? { op: "delete-local", path: p } : { op: "push", path: p },
      );
    } else if (r) {
      actions.push(
        b !== undefined && b === r.hash ? { op: "delete-remote", path: p } : { op: "pull", path: p },
      );
    } else {
      actions.push({ op: "forget", path: p });
    }
  }
  return actions;
}

export function conflictName(p: string, now: Date): string {
  const ts = now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
  return `${p}.conflict-${ts}`;
}

/** Never synced: VCS metadata (like Mutagen's --ignore-vcs) and our own partial downloads. */
export function ignored(rel: string): boolean {
  const parts = rel.split("/");
  if (parts.some((s) => s === ".git" || s === ".hg" || s === ".svn")) return true;
  const base = parts[parts.length - 1] ?? "";
  return base.includes(".createos-sync.");
}

export function sha256File(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/**
 * Lists regular files under `root` (relative, `/`-separated). Hashes are reused from `previous`
 * when size and mtime are unchanged, so a quiet tree costs only stat calls.
 */
export function scanLocal(root: string, previous: Listing): Listing {
  const out: Listing = new Map();
  const walk = (dir: string, rel: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (ignored(r)) continue;
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full, r);
      else if (e.isFile()) {
        try {
          const st = fs.statSync(full);
          const mtime = st.mtimeMs / 1000;
          const prev = previous.get(r);
          const hash = prev && prev.size === st.size && prev.mtime === mtime ? prev.hash : sha256File(full);
          out.set(r, { size: st.size, mtime, hash });
        } catch {
          // vanished between readdir and stat: the next pass sees the delete
        }
      }
    }
  };
  walk(root, "");
  return out;
}

/**
 * Shell script listing `size mtime path` for every regular file under DIR (GNU and BusyBox `stat`
 * both take -c). Paths come out as `./rel`.
 */
export function remoteListScript(dirQuoted: string): string {
  return (
    `mkdir -p ${dirQuoted} && cd ${dirQuoted} && ` +
    "find . \\( -name .git -o -name .hg -o -name .svn \\) -prune -o -type f -exec stat -c '%s %Y %n' {} +"
  );
}

export function parseRemoteList(stdout: string): Array<{ path: string; size: number; mtime: number }> {
  const out: Array<{ path: string; size: number; mtime: number }> = [];
  for (const line of stdout.split("\n")) {
    const m = /^(\d+) (\d+) \.\/(.+)$/.exec(line);
    if (!m) continue;
    const rel = m[3] as string;
    if (ignored(rel)) continue;
    out.push({ path: rel, size: Number(m[1]), mtime: Number(m[2]) });
  }
  return out;
}

/** `sha256sum` output: `<hex>  ./rel` per line. */
export function parseSha256sum(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const m = /^([0-9a-f]{64}) [ *]\.\/(.+)$/.exec(line);
    if (m) out.set(m[2] as string, m[1] as string);
  }
  return out;
}
