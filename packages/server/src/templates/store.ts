/**
 * Template rows and build logs. Its own SQLite file next to the main database (`templates.sqlite`): the
 * rows are read synchronously on the exec path (a template's WORKDIR/USER), and build logs are append-only
 * NDJSON files, one per template, so a log of a long apt run never bloats the database.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";

export type TemplateStatus = "pending" | "building" | "ready" | "failed";

export interface TemplateRow {
  id: string;
  user_id: string;
  name: string;
  base: string;
  status: TemplateStatus;
  ext4_size_bytes: number;
  created_at: string;
  built_at: string | null;
  dockerfile: string;
  /** ENV of the last instruction, JSON: merged under a sandbox's envs at create. */
  env: string;
  cwd: string;
  user: string;
  host_id: string | null;
  status_reason: string | null;
  /** Set by delete: new creates refuse it, sandboxes already made from it keep their image. */
  deleted_at: string | null;
  /** Set once the host's image is removed (no sandbox uses it any more). */
  image_gone: number;
}

/** A cached step layer: the disk after the steps hashed into `hash`, made by and for `user_id`. */
export interface Layer {
  hash: string;
  user_id: string;
  image: string;
}

export interface LogFrame {
  ts: string;
  level: "info" | "error";
  line: string;
  attempt: number;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS templates (
  id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, base TEXT NOT NULL, status TEXT NOT NULL,
  ext4_size_bytes INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, built_at TEXT, dockerfile TEXT NOT NULL,
  env TEXT NOT NULL DEFAULT '{}', cwd TEXT NOT NULL DEFAULT '/', user TEXT NOT NULL DEFAULT 'root',
  host_id TEXT, status_reason TEXT, deleted_at TEXT, image_gone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS templates_user ON templates(user_id, id);
CREATE TABLE IF NOT EXISTS template_layers (
  hash TEXT NOT NULL, user_id TEXT NOT NULL, host_id TEXT NOT NULL, image TEXT NOT NULL,
  created_at TEXT NOT NULL, used_seq INTEGER, PRIMARY KEY (hash, user_id, host_id));`;

/**
 * The owner of layers made before layers had one: no user has this id, so no build boots them, and the
 * next layer gc on their host deletes them (row and image).
 */
export const NO_OWNER = "";

export class TemplateStore {
  private readonly db: Database.Database;
  private readonly logDir: string;

  constructor(dataDir: string) {
    this.db = new Database(join(dataDir, "templates.sqlite"));
    this.db.pragma("journal_mode = WAL");
    this.db.exec(SCHEMA);
    this.migrateLayers();
    this.logDir = join(dataDir, "template-logs");
    mkdirSync(this.logDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Older layer tables: before the cache had a cap they lack `used_seq` (their layers count as the
   * oldest); before layers had an owner they lack `user_id`, and a layer one tenant's steps made was
   * booted for any tenant with the same steps. Those layers are kept as NO_OWNER's — so their images are
   * still known and deleted by the gc — and never booted again.
   */
  private migrateLayers(): void {
    const cols = (this.db.pragma("table_info(template_layers)") as { name: string }[]).map((c) => c.name);
    if (!cols.includes("used_seq")) this.db.exec("ALTER TABLE template_layers ADD COLUMN used_seq INTEGER");
    if (cols.includes("user_id")) return;
    // SQLite cannot change a primary key in place: a new table, the rows copied over, in one transaction.
    this.db.transaction(() => {
      this.db.exec("ALTER TABLE template_layers RENAME TO template_layers_unowned");
      this.db.exec(SCHEMA);
      this.db
        .prepare(
          `INSERT INTO template_layers (hash, user_id, host_id, image, created_at, used_seq)
           SELECT hash, ?, host_id, image, created_at, used_seq FROM template_layers_unowned`,
        )
        .run(NO_OWNER);
      this.db.exec("DROP TABLE template_layers_unowned");
    })();
  }

  insert(row: TemplateRow): void {
    const cols = Object.keys(row);
    this.db
      .prepare(`INSERT INTO templates (${cols.join(",")}) VALUES (${cols.map((c) => `@${c}`).join(",")})`)
      .run(row);
  }

  update(id: string, patch: Partial<TemplateRow>): void {
    const cols = Object.keys(patch);
    if (!cols.length) return;
    this.db.prepare(`UPDATE templates SET ${cols.map((c) => `${c} = @${c}`).join(", ")} WHERE id = @id`).run({
      ...patch,
      id,
    });
  }

  get(id: string): TemplateRow | undefined {
    return this.db.prepare("SELECT * FROM templates WHERE id = ?").get(id) as TemplateRow | undefined;
  }

  /** By id, or by name → the latest ready build of that name; deleted ones are gone for the API. */
  find(userId: string, ref: string): TemplateRow | undefined {
    const byId = this.db
      .prepare("SELECT * FROM templates WHERE user_id = ? AND id = ? AND deleted_at IS NULL")
      .get(userId, ref) as TemplateRow | undefined;
    if (byId) return byId;
    return this.db
      .prepare(
        "SELECT * FROM templates WHERE user_id = ? AND name = ? AND status = 'ready' AND deleted_at IS NULL ORDER BY id DESC LIMIT 1",
      )
      .get(userId, ref) as TemplateRow | undefined;
  }

  list(userId: string, limit: number, offset: number): { rows: TemplateRow[]; total: number } {
    const rows = this.db
      .prepare(
        "SELECT * FROM templates WHERE user_id = ? AND deleted_at IS NULL ORDER BY id DESC LIMIT ? OFFSET ?",
      )
      .all(userId, limit, offset) as TemplateRow[];
    const total = (
      this.db
        .prepare("SELECT COUNT(*) AS n FROM templates WHERE user_id = ? AND deleted_at IS NULL")
        .get(userId) as { n: number }
    ).n;
    return { rows, total };
  }

  /** Builds not finished: pending or building. */
  active(userId?: string): TemplateRow[] {
    return (
      userId
        ? this.db
            .prepare("SELECT * FROM templates WHERE user_id = ? AND status IN ('pending','building')")
            .all(userId)
        : this.db.prepare("SELECT * FROM templates WHERE status IN ('pending','building')").all()
    ) as TemplateRow[];
  }

  /** Deleted templates whose image is still on its host. */
  deletedWithImage(): TemplateRow[] {
    return this.db
      .prepare("SELECT * FROM templates WHERE deleted_at IS NOT NULL AND image_gone = 0 AND status = 'ready'")
      .all() as TemplateRow[];
  }

  /** `userId`'s committed disk after the steps hashed into `hash`, on `hostId`: a layer is its tenant's. */
  layer(hash: string, userId: string, hostId: string): string | undefined {
    const r = this.db
      .prepare("SELECT image FROM template_layers WHERE hash = ? AND user_id = ? AND host_id = ?")
      .get(hash, userId, hostId) as { image: string } | undefined;
    return r?.image;
  }

  putLayer(hash: string, userId: string, hostId: string, image: string): void {
    this.db
      .prepare(
        `INSERT OR REPLACE INTO template_layers (hash, user_id, host_id, image, created_at, used_seq)
         VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM template_layers))`,
      )
      .run(hash, userId, hostId, image, new Date().toISOString());
  }

  /**
   * A build booted from the layer: it is the last to go when the host's cache is over its cap. A counter,
   * not a clock: layers made within one millisecond still have an order.
   */
  touchLayer(hash: string, userId: string, hostId: string): void {
    this.db
      .prepare(
        `UPDATE template_layers SET used_seq = (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM template_layers)
         WHERE hash = ? AND user_id = ? AND host_id = ?`,
      )
      .run(hash, userId, hostId);
  }

  /**
   * The host's layers to delete: those past the `keep` most recently made or booted (the cap spans every
   * tenant: each layer is a whole disk on the host), the least recent last, then every layer of NO_OWNER.
   */
  layersBeyond(hostId: string, keep: number): Layer[] {
    const owned = this.db
      .prepare(
        `SELECT hash, user_id, image FROM template_layers WHERE host_id = ? AND user_id <> ?
         ORDER BY used_seq DESC LIMIT -1 OFFSET ?`,
      )
      .all(hostId, NO_OWNER, keep) as Layer[];
    const unowned = this.db
      .prepare("SELECT hash, user_id, image FROM template_layers WHERE host_id = ? AND user_id = ?")
      .all(hostId, NO_OWNER) as Layer[];
    return [...owned, ...unowned];
  }

  dropLayer(hash: string, userId: string, hostId: string): void {
    this.db
      .prepare("DELETE FROM template_layers WHERE hash = ? AND user_id = ? AND host_id = ?")
      .run(hash, userId, hostId);
  }

  appendLog(id: string, frame: LogFrame): void {
    appendFileSync(join(this.logDir, `${id}.ndjson`), `${JSON.stringify(frame)}\n`, { mode: 0o600 });
  }

  readLog(id: string): LogFrame[] {
    let text: string;
    try {
      text = readFileSync(join(this.logDir, `${id}.ndjson`), "utf8");
    } catch {
      return [];
    }
    return text
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as LogFrame);
  }

  close(): void {
    this.db.close();
  }
}
