/**
 * Private networks and their memberships (issue 12). The tables are migration 1 of schema.ts, given their
 * overlay columns by migration 5; like DiskStore, this class holds its own connection to the same file.
 *
 * A network holds a VNI and a /24 of the overlay pool (overlay/alloc.ts) from create to delete; a
 * membership holds an address of that /24 for as long as it lives, and `programmed` once a host put it in
 * force. Members are sandboxes not on their way out: destroying, destroyed and failed ones are never
 * listed, counted or kept (they leave their networks when their destroy starts).
 */
import Database from "better-sqlite3";
import { type OverlayPool, freeMemberIp, freeSlot } from "../overlay/alloc.js";
import type { NetworkRow, Page, PageQuery, SandboxStatus } from "./types.js";

export const NETWORKS_OVERLAY_SCHEMA = `ALTER TABLE networks ADD COLUMN vni INTEGER;
   ALTER TABLE networks ADD COLUMN cidr TEXT;
   CREATE UNIQUE INDEX networks_vni ON networks(vni);
   CREATE UNIQUE INDEX networks_cidr ON networks(cidr);
   ALTER TABLE network_members ADD COLUMN ip TEXT;
   ALTER TABLE network_members ADD COLUMN programmed INTEGER NOT NULL DEFAULT 0;
   CREATE UNIQUE INDEX network_members_ip ON network_members(network_id, ip);
   CREATE INDEX network_members_sandbox ON network_members(sandbox_id);`;

/** Sandboxes in these statuses are no network's members. */
const GONE = "('destroying', 'destroyed', 'failed')";

/** A network with its address plan (always set on rows this class hands out). */
export type AddressedNetwork = NetworkRow & { vni: number; cidr: string };

export interface MemberRow {
  network_id: string;
  sandbox_id: string;
  name: string;
  status: SandboxStatus;
  host_id?: string;
  ip: string;
  programmed: boolean;
}

function toMember(r: Record<string, unknown>): MemberRow {
  const m: MemberRow = {
    network_id: r.network_id as string,
    sandbox_id: r.sandbox_id as string,
    name: r.name as string,
    status: r.status as SandboxStatus,
    ip: r.ip as string,
    programmed: r.programmed === 1,
  };
  if (r.host_id) m.host_id = r.host_id as string;
  return m;
}

function toNetwork(r: Record<string, unknown> | undefined): NetworkRow | undefined {
  if (!r) return undefined;
  const n: NetworkRow = {
    id: r.id as string,
    user_id: r.user_id as string,
    name: r.name as string,
    created_at: r.created_at as string,
  };
  if (r.vni != null) n.vni = r.vni as number;
  if (r.cidr != null) n.cidr = r.cidr as string;
  return n;
}

export type JoinResult = { ok: true; ip: string; joined: boolean } | { ok: false; why: "full" | "no_subnet" };

export class NetworkStore {
  private constructor(
    private readonly db: Database.Database,
    private readonly pool: OverlayPool,
  ) {}

  /** Opens the store's database file (already migrated by SqliteStore.open). */
  static open(path: string, pool: OverlayPool): NetworkStore {
    const db = new Database(path);
    db.pragma("busy_timeout = 5000");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    return new NetworkStore(db, pool);
  }

  close(): void {
    this.db.close();
  }

  private one(sql: string, ...args: unknown[]): Record<string, unknown> | undefined {
    return this.db.prepare(sql).get(...args) as Record<string, unknown> | undefined;
  }

  private all(sql: string, ...args: unknown[]): Record<string, unknown>[] {
    return this.db.prepare(sql).all(...args) as Record<string, unknown>[];
  }

  /** Gives a network without a subnet (made before migration 5) the lowest free one; false: pool full. */
  private address(id: string): boolean {
    const row = this.one("SELECT vni, cidr FROM networks WHERE id = ?", id);
    if (!row || (row.vni != null && row.cidr != null)) return !!row;
    const s = this.freeSlot();
    if (!s) return false;
    this.db.prepare("UPDATE networks SET vni = ?, cidr = ? WHERE id = ?").run(s.vni, s.cidr, id);
    return true;
  }

  private freeSlot(): { cidr: string; vni: number } | undefined {
    const taken = this.all("SELECT vni, cidr FROM networks WHERE vni IS NOT NULL OR cidr IS NOT NULL");
    return freeSlot(this.pool, {
      cidrs: new Set(taken.map((r) => r.cidr as string)),
      vnis: new Set(taken.map((r) => r.vni as number)),
    });
  }

  /** Inserts the network with the lowest free subnet and VNI; false when the pool has none left. */
  create(row: NetworkRow): AddressedNetwork | undefined {
    return this.db
      .transaction(() => {
        const s = this.freeSlot();
        if (!s) return undefined;
        this.db
          .prepare(
            "INSERT INTO networks (id, user_id, name, created_at, vni, cidr) VALUES (?, ?, ?, ?, ?, ?)",
          )
          .run(row.id, row.user_id, row.name, row.created_at, s.vni, s.cidr);
        return { ...row, vni: s.vni, cidr: s.cidr };
      })
      .immediate();
  }

  /** A network of the tenant by id or name (an id wins over a name that looks like one). */
  get(userId: string, idOrName: string): NetworkRow | undefined {
    return toNetwork(
      this.one(
        "SELECT * FROM networks WHERE user_id = ? AND (id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1",
        userId,
        idOrName,
        idOrName,
        idOrName,
      ),
    );
  }

  byId(id: string): AddressedNetwork | undefined {
    this.db.transaction(() => this.address(id)).immediate();
    return toNetwork(this.one("SELECT * FROM networks WHERE id = ?", id)) as AddressedNetwork | undefined;
  }

  list(userId: string, q: PageQuery): Page<NetworkRow & { member_count: number }> {
    const total = this.one("SELECT COUNT(*) AS n FROM networks WHERE user_id = ?", userId)!.n as number;
    const rows = this.all(
      `SELECT n.*, (SELECT COUNT(*) FROM network_members m JOIN sandboxes s ON s.id = m.sandbox_id
           WHERE m.network_id = n.id AND s.status NOT IN ${GONE}) AS member_count
         FROM networks n WHERE n.user_id = ? ORDER BY n.id DESC LIMIT ? OFFSET ?`,
      userId,
      q.limit,
      q.offset,
    );
    return { rows: rows.map((r) => ({ ...toNetwork(r)!, member_count: r.member_count as number })), total };
  }

  count(userId: string): number {
    return this.one("SELECT COUNT(*) AS n FROM networks WHERE user_id = ?", userId)!.n as number;
  }

  /** Deletes the network unless it has members; the memberships of sandboxes on their way out go with it. */
  delete(id: string): { deleted: boolean; members: MemberRow[] } {
    return this.db
      .transaction(() => {
        const members = this.members(id);
        if (members.length) return { deleted: false, members };
        this.db.prepare("DELETE FROM network_members WHERE network_id = ?").run(id);
        this.db.prepare("DELETE FROM networks WHERE id = ?").run(id);
        return { deleted: true, members };
      })
      .immediate();
  }

  /** The network's members, in the order they joined; a membership made before migration 5 gets its address. */
  members(networkId: string): MemberRow[] {
    const sql = `SELECT m.network_id, m.sandbox_id, m.ip, m.programmed, s.name, s.status, s.host_id
         FROM network_members m JOIN sandboxes s ON s.id = m.sandbox_id
         WHERE m.network_id = ? AND s.status NOT IN ${GONE} ORDER BY m.attached_at, m.rowid`;
    let rows = this.all(sql, networkId);
    if (rows.some((r) => r.ip == null)) {
      this.db
        .transaction(() => {
          for (const r of rows) if (r.ip == null) this.giveIp(networkId, r.sandbox_id as string);
        })
        .immediate();
      rows = this.all(sql, networkId).filter((r) => r.ip != null);
    }
    return rows.map(toMember);
  }

  private giveIp(networkId: string, sandboxId: string): string | undefined {
    const n = this.one("SELECT cidr FROM networks WHERE id = ?", networkId);
    if (!n?.cidr) return undefined;
    const taken = this.all(
      "SELECT ip FROM network_members WHERE network_id = ? AND ip IS NOT NULL",
      networkId,
    );
    const ip = freeMemberIp(n.cidr as string, new Set(taken.map((r) => r.ip as string)));
    if (ip)
      this.db
        .prepare("UPDATE network_members SET ip = ? WHERE network_id = ? AND sandbox_id = ?")
        .run(ip, networkId, sandboxId);
    return ip;
  }

  /**
   * Makes the sandbox a member with the lowest free address of the network's subnet (not yet programmed);
   * already a member: its address, `joined: false`. Memberships of sandboxes on their way out free theirs.
   */
  join(networkId: string, sandboxId: string): JoinResult {
    return this.db
      .transaction((): JoinResult => {
        if (!this.address(networkId)) return { ok: false, why: "no_subnet" };
        const mine = this.one(
          "SELECT ip FROM network_members WHERE network_id = ? AND sandbox_id = ?",
          networkId,
          sandboxId,
        );
        if (mine?.ip) return { ok: true, ip: mine.ip as string, joined: false };
        this.db
          .prepare(
            `DELETE FROM network_members WHERE network_id = ? AND sandbox_id IN
             (SELECT id FROM sandboxes WHERE status IN ${GONE})`,
          )
          .run(networkId);
        if (!mine)
          this.db
            .prepare("INSERT INTO network_members (network_id, sandbox_id, attached_at) VALUES (?, ?, ?)")
            .run(networkId, sandboxId, new Date().toISOString());
        const ip = this.giveIp(networkId, sandboxId);
        if (!ip) {
          this.db
            .prepare("DELETE FROM network_members WHERE network_id = ? AND sandbox_id = ?")
            .run(networkId, sandboxId);
          return { ok: false, why: "full" };
        }
        return { ok: true, ip, joined: true };
      })
      .immediate();
  }

  leave(networkId: string, sandboxId: string): boolean {
    return (
      this.db
        .prepare("DELETE FROM network_members WHERE network_id = ? AND sandbox_id = ?")
        .run(networkId, sandboxId).changes === 1
    );
  }

  /** The ids of the networks the sandbox belongs to, in the order it joined them. */
  networksOf(sandboxId: string): string[] {
    return this.all(
      "SELECT network_id FROM network_members WHERE sandbox_id = ? ORDER BY attached_at, rowid",
      sandboxId,
    ).map((r) => r.network_id as string);
  }

  /** Marks these memberships of the sandbox as in force on its host. */
  setProgrammed(sandboxId: string, networkIds: readonly string[]): void {
    const st = this.db.prepare(
      "UPDATE network_members SET programmed = 1 WHERE sandbox_id = ? AND network_id = ? AND programmed = 0",
    );
    this.db.transaction(() => {
      for (const n of networkIds) st.run(sandboxId, n);
    })();
  }

  /** Running sandboxes with memberships, on one host or (no host given) anywhere. */
  runningMembers(hostId?: string): string[] {
    const where = hostId === undefined ? "" : "AND (s.host_id = ? OR s.host_id IS NULL)";
    return this.all(
      `SELECT DISTINCT m.sandbox_id FROM network_members m JOIN sandboxes s ON s.id = m.sandbox_id
         WHERE s.status = 'running' ${where}`,
      ...(hostId === undefined ? [] : [hostId]),
    ).map((r) => r.sandbox_id as string);
  }
}
