import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { newKeyId, newUserId } from "../ulid.js";
import { DISKS_SCHEMA } from "./disks.js";
import type {
  ApiKeyRow,
  NetworkRow,
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

/** The data dir: made 0700, and kept so when it is ours (hostd's sys/fs.ts `ensurePrivateDir`, in sync). */
export function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const s = statSync(dir);
  if (s.uid === process.getuid?.() && (s.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** Numbered migrations; applied in order inside one transaction each, recorded in `schema_migrations`. */
const MIGRATIONS: string[] = [
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
];

type Kind = "text" | "num" | "bool" | "json";
const SANDBOX_COLUMNS: Record<keyof SandboxRow, Kind> = {
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
const COLUMN_NAMES = Object.keys(SANDBOX_COLUMNS) as (keyof SandboxRow)[];
const TERMINAL: SandboxStatus[] = ["destroyed", "failed"];

function toDb(kind: Kind, v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (kind === "bool") return v ? 1 : 0;
  if (kind === "json") return JSON.stringify(v);
  return v;
}

function rowToSandbox(r: Record<string, unknown>): SandboxRow {
  const out: Record<string, unknown> = {};
  for (const col of COLUMN_NAMES) {
    const v = r[col];
    if (v === null || v === undefined) continue;
    const kind = SANDBOX_COLUMNS[col];
    out[col] = kind === "bool" ? v === 1 : kind === "json" ? JSON.parse(v as string) : v;
  }
  out.ingress_enabled ??= false;
  return out as unknown as SandboxRow;
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

const now = () => new Date().toISOString();

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;

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
    const p = (sql: string) => db.prepare(sql);
    this.stmts = {
      keyByHash: p("SELECT k.id, k.user_id FROM api_keys k WHERE k.hash = ? AND k.revoked_at IS NULL"),
      tokenByHash: p(
        `SELECT id, user_id FROM sandboxes WHERE access_token_hash = ? AND status NOT IN ('destroyed','failed')`,
      ),
      getSandbox: p("SELECT * FROM sandboxes WHERE id = ?"),
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

  async insertSandbox(row: SandboxRow): Promise<void> {
    const cols = COLUMN_NAMES.filter((c) => row[c] !== undefined);
    this.q(`INSERT INTO sandboxes (${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(
      ...cols.map((c) => toDb(SANDBOX_COLUMNS[c], row[c])),
    );
  }

  async getSandbox(id: string): Promise<SandboxRow | undefined> {
    const r = this.stmts.getSandbox!.get(id) as Record<string, unknown> | undefined;
    return r ? rowToSandbox(r) : undefined;
  }

  async getSandboxByIp(userId: string, ip: string): Promise<SandboxRow | undefined> {
    const r = this.stmts.byIp!.get(userId, ip) as Record<string, unknown> | undefined;
    return r ? rowToSandbox(r) : undefined;
  }

  async listSandboxes(userId: string, q: PageQuery & { status?: SandboxStatus }): Promise<Page<SandboxRow>> {
    const where = q.status ? "user_id = ? AND status = ?" : "user_id = ?";
    const args: unknown[] = q.status ? [userId, q.status] : [userId];
    const total = (this.q(`SELECT COUNT(*) AS n FROM sandboxes WHERE ${where}`).get(...args) as { n: number })
      .n;
    const rows = this.q(`SELECT * FROM sandboxes WHERE ${where} ORDER BY id DESC LIMIT ? OFFSET ?`).all(
      ...args,
      q.limit,
      q.offset,
    ) as Record<string, unknown>[];
    return { rows: rows.map(rowToSandbox), total };
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
    this.q(`UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ?`).run(...args, id);
  }

  async transition(id: string, from: SandboxStatus[], patch: SandboxPatch): Promise<boolean> {
    const { sets, args } = this.patchSql(patch);
    const res = this.q(
      `UPDATE sandboxes SET ${sets.join(", ")} WHERE id = ? AND status IN (${from.map(() => "?").join(",")})`,
    ).run(...args, id, ...from);
    return res.changes === 1;
  }

  async touchActivity(id: string, atMs: number): Promise<void> {
    this.stmts.touch!.run(atMs, id);
  }

  async idleSandboxes(nowMs: number): Promise<SandboxRow[]> {
    return (this.stmts.idle!.all(nowMs) as Record<string, unknown>[]).map(rowToSandbox);
  }

  async createNetwork(row: NetworkRow): Promise<void> {
    this.q("INSERT INTO networks (id, user_id, name, created_at) VALUES (?, ?, ?, ?)").run(
      row.id,
      row.user_id,
      row.name,
      row.created_at,
    );
  }

  async getNetwork(userId: string, idOrName: string): Promise<NetworkRow | undefined> {
    return this.q(
      "SELECT * FROM networks WHERE user_id = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1",
    ).get(userId, idOrName, idOrName, idOrName) as NetworkRow | undefined;
  }

  async listNetworks(userId: string, q: PageQuery): Promise<Page<NetworkRow & { member_count: number }>> {
    const total = (
      this.q("SELECT COUNT(*) AS n FROM networks WHERE user_id = ?").get(userId) as { n: number }
    ).n;
    const rows = this.q(
      `SELECT n.*, (SELECT COUNT(*) FROM network_members m WHERE m.network_id = n.id) AS member_count
         FROM networks n WHERE n.user_id = ? ORDER BY n.id DESC LIMIT ? OFFSET ?`,
    ).all(userId, q.limit, q.offset) as (NetworkRow & { member_count: number })[];
    return { rows, total };
  }

  async countNetworks(userId: string): Promise<number> {
    return (this.q("SELECT COUNT(*) AS n FROM networks WHERE user_id = ?").get(userId) as { n: number }).n;
  }

  async deleteNetwork(id: string): Promise<void> {
    this.q("DELETE FROM networks WHERE id = ?").run(id);
  }

  async addNetworkMember(networkId: string, sandboxId: string): Promise<boolean> {
    const res = this.q(
      "INSERT OR IGNORE INTO network_members (network_id, sandbox_id, attached_at) VALUES (?, ?, ?)",
    ).run(networkId, sandboxId, now());
    return res.changes === 1;
  }

  async removeNetworkMember(networkId: string, sandboxId: string): Promise<boolean> {
    const res = this.q("DELETE FROM network_members WHERE network_id = ? AND sandbox_id = ?").run(
      networkId,
      sandboxId,
    );
    return res.changes === 1;
  }

  async networkMembers(networkId: string): Promise<SandboxRow[]> {
    return (
      this.q(
        "SELECT s.* FROM network_members m JOIN sandboxes s ON s.id = m.sandbox_id WHERE m.network_id = ? ORDER BY m.attached_at",
      ).all(networkId) as Record<string, unknown>[]
    ).map(rowToSandbox);
  }

  async sandboxNetworks(sandboxId: string): Promise<string[]> {
    return (
      this.q("SELECT network_id FROM network_members WHERE sandbox_id = ?").all(sandboxId) as {
        network_id: string;
      }[]
    ).map((r) => r.network_id);
  }
}

export { TERMINAL };

function migrate(db: Database.Database): void {
  db.exec(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
  );
  // IMMEDIATE: two processes starting at once must not both apply migration N.
  const apply = db.transaction(() => {
    const current =
      (db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as { v: number | null }).v ?? 0;
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v - 1]!);
      db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(v, now());
    }
  });
  apply.immediate();
}
