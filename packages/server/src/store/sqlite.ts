import { createHash } from "node:crypto";
import { chmodSync, existsSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { newKeyId, newUserId } from "../ulid.js";
import { RowCache } from "./cache.js";
import { COLUMN_NAMES, SANDBOX_COLUMNS, migrate, privateDir, rowToSandbox, toDb } from "./schema.js";
import type {
  ApiKeyRow,
  Page,
  PageQuery,
  Principal,
  SandboxPatch,
  SandboxRow,
  SandboxStatus,
  Store,
  TenantUsage,
  UserRow,
} from "./types.js";

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

const now = () => new Date().toISOString();

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;
  /** Materialised rows (cache.ts): every sandbox write below ends in `rows.forget(id)`. */
  private readonly rows: RowCache;

  /** Prepared statements by SQL text: preparing costs more than running a point query. */
  private readonly cache = new Map<string, Database.Statement>();

  private q(sql: string): Database.Statement {
    let st = this.cache.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.cache.set(sql, st);
    }
    return st;
  }

  private constructor(db: Database.Database) {
    this.db = db;
    this.rows = new RowCache(db);
    const p = (sql: string) => db.prepare(sql);
    this.stmts = {
      keyByHash: p("SELECT k.id, k.user_id FROM api_keys k WHERE k.hash = ? AND k.revoked_at IS NULL"),
      tokenByHash: p(
        `SELECT id, user_id FROM sandboxes WHERE access_token_hash = ? AND status NOT IN ('destroyed','failed')`,
      ),
      byIp: p(
        `SELECT * FROM sandboxes WHERE user_id = ? AND ip = ? ORDER BY (status IN ('destroyed','failed')), created_at DESC LIMIT 1`,
      ),
      nameInUse: p(
        `SELECT 1 FROM sandboxes WHERE user_id = ? AND name = ? AND status NOT IN ('destroyed','failed') LIMIT 1`,
      ),
      touch: p("UPDATE sandboxes SET last_activity_at = MAX(last_activity_at, ?) WHERE id = ?"),
      idle: p(
        `SELECT * FROM sandboxes WHERE status = 'running' AND auto_pause_after_seconds IS NOT NULL
           AND last_activity_at + auto_pause_after_seconds * 1000 <= ?`,
      ),
    };
  }

  static open(path: string): SqliteStore {
    privateDir(dirname(path));
    const db = new Database(path);
    // The database holds the sandboxes' envs (secrets): 0600, and SQLite gives its -wal/-shm the same mode.
    for (const f of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    db.pragma("journal_mode = WAL");
    // Several processes (serve, `users create`) share the file: wait for the writer instead of failing.
    db.pragma("busy_timeout = 5000");
    // FULL: a transition the API acknowledged (a 202 on pause, say) survives a power cut, not only a
    // process crash; in WAL mode that is one fsync of the log per commit.
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    migrate(db);
    return new SqliteStore(db);
  }

  async close(): Promise<void> {
    this.rows.close();
    this.db.close();
  }

  async createUser(name: string): Promise<UserRow> {
    const row: UserRow = { id: newUserId(), name, created_at: now() };
    this.q("INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)").run(row.id, name, row.created_at);
    return row;
  }

  async getUserByName(name: string): Promise<UserRow | undefined> {
    return this.q("SELECT id, name, created_at FROM users WHERE name = ?").get(name) as UserRow | undefined;
  }

  async listUsers(): Promise<(UserRow & { keys: ApiKeyRow[] })[]> {
    const users = this.q("SELECT id, name, created_at FROM users ORDER BY created_at").all() as UserRow[];
    const keys = this.q(
      "SELECT id, user_id, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at",
    ).all() as (ApiKeyRow & { revoked_at: string | null })[];
    return users.map((u) => ({
      ...u,
      keys: keys
        .filter((k) => k.user_id === u.id)
        .map(({ revoked_at, ...k }) => (revoked_at ? { ...k, revoked_at } : k)),
    }));
  }

  async addApiKey(userId: string, key: string): Promise<ApiKeyRow> {
    const row: ApiKeyRow = { id: newKeyId(), user_id: userId, prefix: key.slice(0, 12), created_at: now() };
    this.q("INSERT INTO api_keys (id, user_id, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?)").run(
      row.id,
      userId,
      row.prefix,
      hashSecret(key),
      row.created_at,
    );
    return row;
  }

  async revokeKeys(prefixOrId: string): Promise<{ revoked: ApiKeyRow[]; ambiguous: ApiKeyRow[] }> {
    return this.db.transaction(() => {
      // The id, the whole key, or a prefix of at least 8 characters (at most the 12 we store).
      const rows = this.q(
        `SELECT id, user_id, prefix, created_at FROM api_keys WHERE revoked_at IS NULL
           AND (id = ? OR hash = ? OR (length(?) BETWEEN 8 AND 12 AND substr(prefix, 1, length(?)) = ?))`,
      ).all(prefixOrId, hashSecret(prefixOrId), prefixOrId, prefixOrId, prefixOrId) as ApiKeyRow[];
      // An ambiguous prefix revokes nothing: the operator must say which key.
      if (rows.length !== 1) return { revoked: [], ambiguous: rows };
      const at = now();
      this.q("UPDATE api_keys SET revoked_at = ? WHERE id = ?").run(at, rows[0]!.id);
      return { revoked: [{ ...rows[0]!, revoked_at: at }], ambiguous: [] };
    })();
  }

  async authenticate(secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret);
    const key = this.stmts.keyByHash!.get(hash) as { id: string; user_id: string } | undefined;
    if (key) return { user_id: key.user_id, credential_id: key.id };
    const tok = this.stmts.tokenByHash!.get(hash) as { id: string; user_id: string } | undefined;
    if (tok) return { user_id: tok.user_id, credential_id: `token:${tok.id}`, sandbox_id: tok.id };
    return undefined;
  }

  /** Runs a write of row `id`, then drops the cached row, also when the write failed or changed nothing. */
  private writing<T>(id: string, write: () => T): T {
    try {
      return write();
    } finally {
      this.rows.forget(id);
    }
  }

  async insertSandbox(row: SandboxRow): Promise<void> {
    const cols = COLUMN_NAMES.filter((c) => row[c] !== undefined);
    this.writing(row.id, () =>
      this.q(`INSERT INTO sandboxes (${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(
        ...cols.map((c) => toDb(SANDBOX_COLUMNS[c], row[c])),
      ),
    );
  }

  async getSandbox(id: string): Promise<SandboxRow | undefined> {
    this.rows.sync();
    return this.rows.get(id);
  }

  async getSandboxByIp(userId: string, ip: string): Promise<SandboxRow | undefined> {
    const r = this.stmts.byIp!.get(userId, ip) as Record<string, unknown> | undefined;
    return r ? rowToSandbox(r) : undefined;
  }

  async listSandboxes(userId: string, q: PageQuery & { status?: SandboxStatus }): Promise<Page<SandboxRow>> {
    this.rows.sync();
    return this.rows.page(`${userId} ${q.status ?? ""} ${q.limit} ${q.offset}`, () => {
      const where = q.status ? "user_id = ? AND status = ?" : "user_id = ?";
      const args: unknown[] = q.status ? [userId, q.status] : [userId];
      const total = this.q(`SELECT COUNT(*) FROM sandboxes WHERE ${where}`)
        .pluck()
        .get(...args) as number;
      // Only the ids: the rows come from the cache (a page of 50 full rows read and decoded cost ~1 ms).
      const ids = this.q(`SELECT id FROM sandboxes WHERE ${where} ORDER BY id DESC LIMIT ? OFFSET ?`)
        .pluck()
        .all(...args, q.limit, q.offset) as string[];
      const rows: SandboxRow[] = [];
      for (const id of ids) {
        const row = this.rows.get(id);
        if (row) rows.push(row);
      }
      return { rows, total };
    });
  }

  async sandboxesInStatus(statuses: SandboxStatus[]): Promise<SandboxRow[]> {
    const rows = this.q(`SELECT * FROM sandboxes WHERE status IN (${statuses.map(() => "?").join(",")})`).all(
      ...statuses,
    ) as Record<string, unknown>[];
    return rows.map(rowToSandbox);
  }

  async countSandboxes(userId: string, statuses: SandboxStatus[]): Promise<number> {
    return (
      this.q(
        `SELECT COUNT(*) AS n FROM sandboxes WHERE user_id = ? AND status IN (${statuses.map(() => "?").join(",")})`,
      ).get(userId, ...statuses) as { n: number }
    ).n;
  }

  async tenantUsage(userId: string, statuses: readonly SandboxStatus[]): Promise<TenantUsage> {
    const r = this.q(
      `SELECT COUNT(*) AS n, COALESCE(SUM(disk_mib), 0) AS disk,
         COALESCE(SUM(json_extract(snapshot, '$.size_bytes')), 0) AS snap
       FROM sandboxes WHERE user_id = ? AND status IN (${statuses.map(() => "?").join(",")})`,
    ).get(userId, ...statuses) as { n: number; disk: number; snap: number };
    return { sandboxes: r.n, disk_mib: r.disk, snapshot_bytes: r.snap };
  }

  async statusCounts(userId?: string): Promise<Record<string, number>> {
    const rows = (
      userId
        ? this.q("SELECT status, COUNT(*) AS n FROM sandboxes WHERE user_id = ? GROUP BY status").all(userId)
        : this.q("SELECT status, COUNT(*) AS n FROM sandboxes GROUP BY status").all()
    ) as { status: string; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  async nameInUse(userId: string, name: string): Promise<boolean> {
    return this.stmts.nameInUse!.get(userId, name) !== undefined;
  }

  private patchSql(patch: SandboxPatch): { sets: string[]; args: unknown[] } {
    const sets: string[] = [];
    const args: unknown[] = [];
    for (const [k, v] of Object.entries(patch)) {
      if (k === "clear" || v === undefined) continue;
      const kind = SANDBOX_COLUMNS[k as keyof SandboxRow];
      if (!kind) throw new Error(`unknown sandbox column ${k}`);
      sets.push(`${k} = ?`);
      args.push(toDb(kind, v));
    }
    for (const c of patch.clear ?? []) sets.push(`${c} = NULL`);
    return { sets, args };
  }

  async updateSandbox(id: string, patch: SandboxPatch): Promise<void> {
    const { sets, args } = this.patchSql(patch);
    if (sets.length === 0) return;
    this.writing(id, () => this.q(`UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ?`).run(...args, id));
  }

  async transition(id: string, from: SandboxStatus[], patch: SandboxPatch): Promise<boolean> {
    const { sets, args } = this.patchSql(patch);
    const res = this.writing(id, () =>
      this.q(
        `UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ? AND status IN (${from.map(() => "?").join(",")})`,
      ).run(...args, id, ...from),
    );
    return res.changes === 1;
  }

  async touchActivity(id: string, atMs: number): Promise<void> {
    this.writing(id, () => this.stmts.touch!.run(atMs, id));
  }

  async idleSandboxes(nowMs: number): Promise<SandboxRow[]> {
    return (this.stmts.idle!.all(nowMs) as Record<string, unknown>[]).map(rowToSandbox);
  }
}
