/**
 * Materialised sandbox rows by id, so that a read (one row, a page of a list) costs a map lookup instead
 * of a `SELECT *` of ~35 columns and their decoding. Coherence rules:
 * - every write of a sandbox row in this process goes through `SqliteStore`, which drops the row here
 *   after the statement, whether it changed one row, none (a compare-and-set that lost) or failed (a
 *   constraint: SQLite rolled the statement back). Dropping rather than writing the new value through
 *   keeps the database the one that computes a row (`MAX()`, `clear`, defaults);
 * - nothing is cached while a transaction is open: a read inside it may see writes that roll back;
 * - another connection (a second process on the same file: `users`, a replica, a test's own store) is
 *   seen through the WAL index (`CommitWatch` below): the whole cache is dropped when it has committed.
 *   The index is looked at by a read at most once every `LOOK_MS` (1 ms): the look is a system call, which
 *   under load cost ~15 % of a cached GET (7 µs of ~50, measured), so another connection's commit is seen
 *   by every read that starts 1 ms or more after it, and may be missed by one that starts sooner.
 * Rows are frozen (schema.ts `rowToSandbox`), so the one object handed to every reader stays what the
 * database said. Pages of lists are kept too, by their query, until the next write of any sandbox row or
 * commit of another connection: a page depends on which rows a tenant has, their order and contents.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type Database from "better-sqlite3";
import { rowToSandbox } from "./schema.js";
import type { Page, SandboxRow } from "./types.js";

/** Past this many rows (pages) the oldest-cached go first (a map keeps insertion order). */
const MAX_ROWS = 20_000;
const MAX_PAGES = 1_000;
/** Reads within this long of the last look at the WAL index trust it (see the coherence rules above). */
const LOOK_MS = 1;

function put<T>(m: Map<string, T>, max: number, key: string, v: T): void {
  if (m.size >= max) m.delete(m.keys().next().value!);
  m.set(key, v);
}

/**
 * Whether a connection other than ours has committed since the last look. `PRAGMA data_version` says so
 * exactly but opens a read transaction each time: two lock calls and a stat, system calls that cost more than
 * the rest of a cached GET. In WAL mode every commit, by any connection, rewrites the wal-index header at
 * the start of the `-shm` file (its change counter, frame count and salts: sqlite.org/walformat.html, "The
 * WAL-Index Header"), so one read of its first 48 bytes tells whether anything was committed. Commits of our
 * own change it too: after each (`ours()`) the header is taken as seen only once `data_version` confirms
 * nobody else committed meanwhile. Without a `-shm` file (not WAL) every look asks `data_version`.
 */
class CommitWatch {
  private readonly version: Database.Statement;
  private seenVersion: unknown;
  private readonly fd: number | undefined;
  private readonly seen = Buffer.alloc(48);
  private readonly now = Buffer.alloc(48);

  constructor(db: Database.Database) {
    this.version = db.prepare("PRAGMA data_version").pluck();
    this.seenVersion = this.version.get();
    let fd: number | undefined;
    try {
      fd = openSync(`${db.name}-shm`, "r");
    } catch {
      fd = undefined;
    }
    this.fd = fd;
    if (fd !== undefined && !this.header(this.seen)) this.seen.fill(0);
  }

  /** Reads the header; false when the file is shorter than one (not initialised: ask `data_version`). */
  private header(into: Buffer): boolean {
    return readSync(this.fd!, into, 0, 48, 0) === 48;
  }

  /** True when another connection may have committed since the last call (or `ours()`). */
  changed(): boolean {
    if (this.fd === undefined || !this.header(this.now)) return this.versionChanged();
    if (this.now.equals(this.seen)) return false;
    this.now.copy(this.seen);
    return true;
  }

  /** After a commit of ours: true when another's may have come too (then drop everything). */
  ours(): boolean {
    if (this.fd !== undefined && !this.header(this.seen)) this.seen.fill(0);
    return this.versionChanged();
  }

  private versionChanged(): boolean {
    const v = this.version.get();
    if (v === this.seenVersion) return false;
    this.seenVersion = v;
    return true;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
  }
}

export class RowCache {
  private readonly rows = new Map<string, SandboxRow>();
  private readonly pages = new Map<string, Page<SandboxRow>>();
  private readonly byId: Database.Statement;
  private readonly commits: CommitWatch;

  constructor(private readonly db: Database.Database) {
    this.byId = db.prepare("SELECT * FROM sandboxes WHERE id = ?");
    this.commits = new CommitWatch(db);
  }

  private lookedAt = Number.NEGATIVE_INFINITY;

  /** Drops everything when another connection has committed since the last look (at most one per LOOK_MS). */
  sync(): void {
    const now = performance.now();
    if (now - this.lookedAt < LOOK_MS) return;
    this.lookedAt = now;
    if (this.commits.changed()) this.clear();
  }

  private clear(): void {
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

  /** After a write of the row by this connection (committed, or rolled back by SQLite). */
  forget(id: string): void {
    this.rows.delete(id);
    this.pages.clear();
    if (!this.db.inTransaction && this.commits.ours()) this.clear();
  }

  close(): void {
    this.commits.close();
  }

  /** How many rows are held (tests). */
  get size(): number {
    return this.rows.size;
  }
}
