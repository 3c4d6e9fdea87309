/**
 * Materialised sandbox rows by id, so that a read (one row, a page of a list) costs a map lookup instead
 * of a `SELECT *` of ~35 columns and their decoding. Coherence rules:
 * - every write of a sandbox row in this process goes through `SqliteStore`, which drops the row here
 *   after the statement, whether it changed one row, none (a compare-and-set that lost) or failed (a
 *   constraint: SQLite rolled the statement back). Dropping rather than writing the new value through
 *   keeps the database the one that computes a row (`MAX()`, `clear`, defaults);
 * - nothing is cached while a transaction is open: a read inside it may see writes that roll back;
 * - another connection (a second process on the same file: `users`, a replica, a test's own store) is
 *   seen through `PRAGMA data_version`, which changes when any other connection commits: the whole cache
 *   is dropped then.
 * Rows are frozen (schema.ts `rowToSandbox`), so the one object handed to every reader stays what the
 * database said. Pages of lists are kept too, by their query, until the next write of any sandbox row or
 * commit of another connection: a page depends on which rows a tenant has, their order and contents.
 */
import type Database from "better-sqlite3";
import { rowToSandbox } from "./schema.js";
import type { Page, SandboxRow } from "./types.js";

/** Past this many rows (pages) the oldest-cached go first (a map keeps insertion order). */
const MAX_ROWS = 20_000;
const MAX_PAGES = 1_000;

function put<T>(m: Map<string, T>, max: number, key: string, v: T): void {
  if (m.size >= max) m.delete(m.keys().next().value!);
  m.set(key, v);
}

export class RowCache {
  private readonly rows = new Map<string, SandboxRow>();
  private readonly pages = new Map<string, Page<SandboxRow>>();
  private readonly version: Database.Statement;
  private readonly byId: Database.Statement;
  private seen: unknown;

  constructor(private readonly db: Database.Database) {
    this.version = db.prepare("PRAGMA data_version").pluck();
    this.byId = db.prepare("SELECT * FROM sandboxes WHERE id = ?");
    this.seen = this.version.get();
  }

  /** Drops everything when another connection has committed since the last look; once per read. */
  sync(): void {
    const v = this.version.get();
    if (v === this.seen) return;
    this.seen = v;
    this.rows.clear();
    this.pages.clear();
  }

  /** The row by id (call `sync()` first), from memory or read and kept. */
  get(id: string): SandboxRow | undefined {
    const hit = this.rows.get(id);
    if (hit) return hit;
    const raw = this.byId.get(id) as Record<string, unknown> | undefined;
    if (!raw) return undefined;
    const row = rowToSandbox(raw);
    if (!this.db.inTransaction) put(this.rows, MAX_ROWS, id, row);
    return row;
  }

  /** A page by its query's key (call `sync()` first), from memory or made by `read` and kept. */
  page(key: string, read: () => Page<SandboxRow>): Page<SandboxRow> {
    const hit = this.pages.get(key);
    if (hit) return hit;
    const p = read();
    Object.freeze(p.rows);
    if (!this.db.inTransaction) put(this.pages, MAX_PAGES, key, Object.freeze(p));
    return p;
  }

  forget(id: string): void {
    this.rows.delete(id);
    this.pages.clear();
  }

  /** How many rows are held (tests). */
  get size(): number {
    return this.rows.size;
  }
}
