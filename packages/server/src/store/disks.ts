/**
 * Disk registrations and their attachments to sandboxes. The tables are migration 4 of sqlite.ts; this
 * class holds its own connection to the same file (WAL: readers and the one writer do not block) so the
 * Store interface every engine test stubs stays as it was.
 *
 * `secret` is the sealed `{access_key, secret_key}` (disks/keybox.ts); nothing here ever sees it clear.
 */
import Database from "better-sqlite3";

export const DISKS_SCHEMA = `CREATE TABLE disks (
     id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL REFERENCES users(id),
     name TEXT NOT NULL,
     kind TEXT NOT NULL,
     config TEXT NOT NULL,
     secret TEXT NOT NULL,
     created_at TEXT NOT NULL,
     deleted_at TEXT
   );
   CREATE UNIQUE INDEX disks_live_name ON disks(user_id, name) WHERE deleted_at IS NULL;
   CREATE TABLE disk_attachments (
     sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
     disk_id TEXT NOT NULL REFERENCES disks(id),
     mount_path TEXT NOT NULL,
     sub_path TEXT,
     mount_status TEXT NOT NULL,
     mount_error TEXT,
     attached_at TEXT NOT NULL,
     PRIMARY KEY (sandbox_id, mount_path)
   );
   CREATE INDEX disk_attachments_disk ON disk_attachments(disk_id);`;

export interface DiskRow {
  id: string;
  user_id: string;
  name: string;
  kind: "s3";
  config: { bucket: string; endpoint: string; region?: string; use_path_style?: boolean };
  secret: string;
  created_at: string;
}

export type MountStatus = "pending" | "mounted" | "error" | "unmounting";

export interface AttachmentRow {
  sandbox_id: string;
  disk_id: string;
  mount_path: string;
  sub_path?: string;
  mount_status: MountStatus;
  mount_error?: string;
}

function toDisk(r: Record<string, unknown> | undefined): DiskRow | undefined {
  if (!r) return undefined;
  const { deleted_at: _d, ...rest } = r;
  return { ...(rest as unknown as DiskRow), config: JSON.parse(r.config as string) };
}

function toAttachment(r: Record<string, unknown>): AttachmentRow {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) if (v !== null && k !== "attached_at") out[k] = v;
  return out as unknown as AttachmentRow;
}

export class DiskStore {
  private constructor(private readonly db: Database.Database) {}

  /** Opens the store's database file (already migrated by SqliteStore.open). */
  static open(path: string): DiskStore {
    const db = new Database(path);
    db.pragma("busy_timeout = 5000");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    return new DiskStore(db);
  }

  close(): void {
    this.db.close();
  }

  create(row: DiskRow): void {
    this.db
      .prepare(
        "INSERT INTO disks (id, user_id, name, kind, config, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      )
      .run(row.id, row.user_id, row.name, row.kind, JSON.stringify(row.config), row.secret, row.created_at);
  }

  /** A live disk of the tenant by id or name (an id wins over a name that looks like one). */
  get(userId: string, ref: string): DiskRow | undefined {
    return toDisk(
      this.db
        .prepare(
          `SELECT * FROM disks WHERE user_id = ? AND deleted_at IS NULL AND (id = ? OR name = ?)
             ORDER BY id = ? DESC LIMIT 1`,
        )
        .get(userId, ref, ref, ref) as Record<string, unknown> | undefined,
    );
  }

  byId(id: string): DiskRow | undefined {
    return toDisk(this.db.prepare("SELECT * FROM disks WHERE id = ?").get(id) as Record<string, unknown>);
  }

  list(userId: string, limit: number, offset: number): { rows: DiskRow[]; total: number } {
    const total = (
      this.db
        .prepare("SELECT COUNT(*) AS n FROM disks WHERE user_id = ? AND deleted_at IS NULL")
        .get(userId) as {
        n: number;
      }
    ).n;
    const rows = this.db
      .prepare(
        "SELECT * FROM disks WHERE user_id = ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ? OFFSET ?",
      )
      .all(userId, limit, offset) as Record<string, unknown>[];
    return { rows: rows.map((r) => toDisk(r)!), total };
  }

  setSecret(id: string, secret: string): void {
    this.db.prepare("UPDATE disks SET secret = ? WHERE id = ?").run(secret, id);
  }

  /** Soft delete: the row stays for the attachments' history; the name is free again. */
  softDelete(id: string): void {
    this.db.prepare("UPDATE disks SET deleted_at = ? WHERE id = ?").run(new Date().toISOString(), id);
  }

  /**
   * Sandboxes that hold the disk: not destroyed or failed, and not being destroyed either (its mounts
   * are going with its VM), so the seed's destroy-then-delete works without waiting for the teardown.
   */
  holders(diskId: string): number {
    return (
      this.db
        .prepare(
          `SELECT COUNT(DISTINCT a.sandbox_id) AS n FROM disk_attachments a JOIN sandboxes s ON s.id = a.sandbox_id
             WHERE a.disk_id = ? AND s.status NOT IN ('destroying', 'destroyed', 'failed')`,
        )
        .get(diskId) as { n: number }
    ).n;
  }

  /** False when the sandbox already has something at that mount path. */
  attach(a: AttachmentRow): boolean {
    const r = this.db
      .prepare(
        `INSERT OR IGNORE INTO disk_attachments (sandbox_id, disk_id, mount_path, sub_path, mount_status, attached_at)
           VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(
        a.sandbox_id,
        a.disk_id,
        a.mount_path,
        a.sub_path ?? null,
        a.mount_status,
        new Date().toISOString(),
      );
    return r.changes === 1;
  }

  attachments(sandboxId: string): AttachmentRow[] {
    return (
      this.db
        .prepare("SELECT * FROM disk_attachments WHERE sandbox_id = ? ORDER BY attached_at, mount_path")
        .all(sandboxId) as Record<string, unknown>[]
    ).map(toAttachment);
  }

  /** Attachments of the running sandboxes placed on a host (to mount again when the host comes back). */
  runningOn(hostId: string): AttachmentRow[] {
    return (
      this.db
        .prepare(
          `SELECT a.* FROM disk_attachments a JOIN sandboxes s ON s.id = a.sandbox_id
             WHERE s.status = 'running' AND s.host_id = ? ORDER BY a.sandbox_id, a.attached_at`,
        )
        .all(hostId) as Record<string, unknown>[]
    ).map(toAttachment);
  }

  setStatus(sandboxId: string, mountPath: string, status: MountStatus, error?: string): void {
    this.db
      .prepare(
        "UPDATE disk_attachments SET mount_status = ?, mount_error = ? WHERE sandbox_id = ? AND mount_path = ?",
      )
      .run(status, error ?? null, sandboxId, mountPath);
  }

  detach(sandboxId: string, diskId: string, mountPath: string): boolean {
    return (
      this.db
        .prepare("DELETE FROM disk_attachments WHERE sandbox_id = ? AND disk_id = ? AND mount_path = ?")
        .run(sandboxId, diskId, mountPath).changes === 1
    );
  }
}
