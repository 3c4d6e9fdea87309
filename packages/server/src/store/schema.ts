/** The database's shape: its migrations, and how a `sandboxes` row maps to a `SandboxRow` and back. */
import { chmodSync, mkdirSync, statSync } from "node:fs";
import type Database from "better-sqlite3";
import { DISKS_SCHEMA } from "./disks.js";
import { NETWORKS_OVERLAY_SCHEMA } from "./networks.js";
import type { SandboxRow } from "./types.js";

/** The data dir: made 0700, and kept so when it is ours (hostd's sys/fs.ts `ensurePrivateDir`, in sync). */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const s = statSync(dir);
  if (s.uid === process.getuid?.() && (s.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** Numbered migrations; applied in order inside one transaction each, recorded in `schema_migrations`. */
export const MIGRATIONS: string[] = [
  `CREATE TABLE users (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     created_at TEXT NOT NULL
   );
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL REFERENCES users(id),
     prefix TEXT NOT NULL,
     hash TEXT NOT NULL UNIQUE,
     created_at TEXT NOT NULL,
     revoked_at TEXT
   );
   CREATE TABLE sandboxes (
     id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL REFERENCES users(id),
     name TEXT NOT NULL,
     status TEXT NOT NULL,
     shape TEXT NOT NULL,
     rootfs TEXT NOT NULL,
     vcpu INTEGER NOT NULL,
     mem_mib INTEGER NOT NULL,
     disk_mib INTEGER NOT NULL,
     region TEXT NOT NULL,
     ip TEXT,
     host_id TEXT,
     spawn_ms REAL,
     created_at TEXT NOT NULL,
     created_by TEXT,
     running_at TEXT,
     paused_at TEXT,
     last_resumed_at TEXT,
     destroyed_at TEXT,
     forked_from TEXT,
     auto_pause_after_seconds INTEGER,
     ingress_enabled INTEGER NOT NULL DEFAULT 0,
     egress TEXT NOT NULL DEFAULT '[]',
     envs TEXT NOT NULL DEFAULT '{}',
     ssh_pubkeys TEXT NOT NULL DEFAULT '[]',
     snapshot TEXT,
     bandwidth_quota_bytes INTEGER NOT NULL,
     bandwidth_used_bytes INTEGER NOT NULL DEFAULT 0,
     bandwidth_ingress_bytes INTEGER NOT NULL DEFAULT 0,
     last_activity_at INTEGER NOT NULL,
     status_reason TEXT,
     access_token_hash TEXT,
     access_token_hint TEXT,
     access_token_created_at TEXT,
     access_token_rotated_at TEXT
   );
   CREATE INDEX sandboxes_user ON sandboxes(user_id, created_at);
   CREATE INDEX sandboxes_status ON sandboxes(status);
   CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(user_id, name)
     WHERE status NOT IN ('destroyed', 'failed');
   CREATE UNIQUE INDEX sandboxes_access_token ON sandboxes(access_token_hash)
     WHERE access_token_hash IS NOT NULL;
   CREATE TABLE networks (
     id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL REFERENCES users(id),
     name TEXT NOT NULL,
     created_at TEXT NOT NULL,
     UNIQUE (user_id, name)
   );
   CREATE TABLE network_members (
     network_id TEXT NOT NULL REFERENCES networks(id),
     sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
     attached_at TEXT NOT NULL,
     PRIMARY KEY (network_id, sandbox_id)
   );`,
  // Lists page newest first by id (ULIDs sort by creation time), straight off this index, no sort step.
  `DROP INDEX sandboxes_user;
   CREATE INDEX sandboxes_user_id ON sandboxes(user_id, id);`,
  // The id of the snapshot a pause (or a paused fork) is making, recorded before the host is asked.
  "ALTER TABLE sandboxes ADD COLUMN pending_snapshot_id TEXT;",
  // S3 disk registrations and attachments (store/disks.ts).
  DISKS_SCHEMA,
  // Private networks' VNI and subnet, and each membership's address (store/networks.ts).
  NETWORKS_OVERLAY_SCHEMA,
];

export type Kind = "text" | "num" | "bool" | "json";
export const SANDBOX_COLUMNS: Record<keyof SandboxRow, Kind> = {
  id: "text",
  user_id: "text",
  name: "text",
  status: "text",
  shape: "text",
  rootfs: "text",
  vcpu: "num",
  mem_mib: "num",
  disk_mib: "num",
  region: "text",
  ip: "text",
  host_id: "text",
  spawn_ms: "num",
  created_at: "text",
  created_by: "text",
  running_at: "text",
  paused_at: "text",
  last_resumed_at: "text",
  destroyed_at: "text",
  forked_from: "text",
  auto_pause_after_seconds: "num",
  ingress_enabled: "bool",
  egress: "json",
  envs: "json",
  ssh_pubkeys: "json",
  snapshot: "json",
  pending_snapshot_id: "text",
  bandwidth_quota_bytes: "num",
  bandwidth_used_bytes: "num",
  bandwidth_ingress_bytes: "num",
  last_activity_at: "num",
  status_reason: "text",
  access_token_hash: "text",
  access_token_hint: "text",
  access_token_created_at: "text",
  access_token_rotated_at: "text",
};
export const COLUMN_NAMES = Object.keys(SANDBOX_COLUMNS) as (keyof SandboxRow)[];
export function toDb(kind: Kind, v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (kind === "bool") return v ? 1 : 0;
  if (kind === "json") return JSON.stringify(v);
  return v;
}

/**
 * A row as the store hands it out: frozen, arrays and objects too, so that one materialised row can be
 * shared by every reader (the row cache, `views.ts`' memo) and none of them can change it for the others.
 */
export function rowToSandbox(r: Record<string, unknown>): SandboxRow {
  const out: Record<string, unknown> = {};
  for (const col of COLUMN_NAMES) {
    const v = r[col];
    if (v === null || v === undefined) continue;
    const kind = SANDBOX_COLUMNS[col];
    out[col] = kind === "bool" ? v === 1 : kind === "json" ? Object.freeze(JSON.parse(v as string)) : v;
  }
  out.ingress_enabled ??= false;
  return Object.freeze(out) as unknown as SandboxRow;
}

export function migrate(db: Database.Database): void {
  db.exec(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  // IMMEDIATE: two processes starting at once must not both apply migration N.
  const apply = db.transaction(() => {
    const current =
      (db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as { v: number | null }).v ?? 0;
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v - 1]!);
      db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(
        v,
        new Date().toISOString(),
      );
    }
  });
  apply.immediate();
}
