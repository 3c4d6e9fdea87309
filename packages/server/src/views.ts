import type { api } from "@createos-sandbox/protocol";
import type { ServerConfig } from "./config.js";
import { ingressTemplate } from "./ingress/host.js";
import type { MemberRow } from "./store/networks.js";
import type { NetworkRow, Page, SandboxRow } from "./store/types.js";

/** The API projection of a row: optional fields omitted when unset, env values never included. */
export function sandboxView(row: SandboxRow, cfg: ServerConfig): api.SandboxView {
  const v: api.SandboxView = {
    id: row.id,
    status: row.status,
    vcpu: row.vcpu,
    mem_mib: row.mem_mib,
    disk_mib: row.disk_mib,
    created_at: row.created_at,
    ingress_enabled: row.ingress_enabled,
    name: row.name,
    shape: row.shape,
    rootfs: row.rootfs,
    region: row.region,
    egress: row.egress,
    envs: Object.keys(row.envs),
    ssh_pubkeys: row.ssh_pubkeys,
    bandwidth_ingress_bytes: row.bandwidth_ingress_bytes,
  };
  if (row.host_id) v.host_id = row.host_id;
  if (row.ip !== undefined && row.status !== "creating") v.ip = row.ip;
  const tpl = ingressTemplate(row, cfg);
  if (tpl) v.ingress_url_template = tpl;
  if (row.running_at) v.running_at = row.running_at;
  if (row.destroyed_at) v.destroyed_at = row.destroyed_at;
  if (row.spawn_ms !== undefined) v.spawn_ms = row.spawn_ms;
  if (row.created_by) v.created_by = row.created_by;
  if (row.paused_at) v.paused_at = row.paused_at;
  if (row.last_resumed_at) v.last_resumed_at = row.last_resumed_at;
  if (row.forked_from) v.forked_from = row.forked_from;
  if (row.auto_pause_after_seconds !== undefined) v.auto_pause_after_seconds = row.auto_pause_after_seconds;
  if (row.status_reason) v.status_reason = row.status_reason;
  return v;
}

const texts = new WeakMap<ServerConfig, WeakMap<object, string>>();

/**
 * `make()`, kept per object: a row or a page from the store is frozen (store/schema.ts, store/cache.ts) and
 * replaced by a new object when it changes, so its text cannot go stale. Others are not kept.
 */
function kept(of: object, cfg: ServerConfig, make: () => string): string {
  if (!Object.isFrozen(of)) return make();
  let mine = texts.get(cfg);
  if (!mine) {
    mine = new WeakMap();
    texts.set(cfg, mine);
  }
  let text = mine.get(of);
  if (text === undefined) {
    text = make();
    mine.set(of, text);
  }
  return text;
}

/** `JSON.stringify(sandboxView(row))`, kept per row object. */
export function sandboxViewJson(row: SandboxRow, cfg: ServerConfig): string {
  return kept(row, cfg, () => JSON.stringify(sandboxView(row, cfg)));
}

/** `JSON.stringify(page(views of p))`, kept per page object (the store keeps one per query). */
export function sandboxPageJson(
  p: Page<SandboxRow>,
  limit: number,
  offset: number,
  cfg: ServerConfig,
): string {
  const make = () =>
    pageJson(
      p.rows.map((r) => sandboxViewJson(r, cfg)),
      p.total,
      limit,
      offset,
    );
  return kept(p, cfg, make);
}

/** Create answers the full view plus the create-only fields, so a client seeding its handle from it has all. */
export function createResponse(
  row: SandboxRow,
  cfg: ServerConfig,
): api.CreateSandboxResponse & api.SandboxView {
  return {
    ...sandboxView(row, cfg),
    ip: row.ip ?? "",
    name: row.name,
    shape: row.shape,
    rootfs: row.rootfs,
    spawn_ms: row.spawn_ms ?? 0,
    egress: row.egress,
    bandwidth_quota_bytes: row.bandwidth_quota_bytes,
  };
}

export function bandwidthView(row: SandboxRow): api.BandwidthView {
  const unmetered = row.bandwidth_quota_bytes < 0;
  return {
    id: row.id,
    quota_bytes: row.bandwidth_quota_bytes,
    used_bytes: row.bandwidth_used_bytes,
    ingress_bytes: row.bandwidth_ingress_bytes,
    remaining_bytes: unmetered ? -1 : row.bandwidth_quota_bytes - row.bandwidth_used_bytes,
    capped: !unmetered && row.bandwidth_used_bytes >= row.bandwidth_quota_bytes,
  };
}

export function networkView(
  n: NetworkRow,
  extra: { member_count?: number; members?: MemberRow[] },
): api.Network {
  const v: api.Network = { id: n.id, name: n.name, created_at: n.created_at };
  if (extra.member_count !== undefined) v.member_count = extra.member_count;
  if (extra.members) {
    v.members = extra.members.map((s) => {
      const m: api.NetworkMember = { sandbox_id: s.sandbox_id, status: s.status, name: s.name };
      // The address is claimed once a host has put it in force (protocol.md §2.7: absent until then).
      if (s.programmed) m.ip = s.ip;
      return m;
    });
  }
  return v;
}

export function page<T>(items: T[], total: number, limit: number, offset: number): api.Page<T> {
  return { data: items, pagination: { total, limit, offset, count: items.length } };
}

/** The text of `page()` over items already serialised: what `JSON.stringify(page(…))` gives, byte for byte. */
export function pageJson(items: string[], total: number, limit: number, offset: number): string {
  const { pagination } = page(items, total, limit, offset);
  return `{"data":[${items.join(",")}],"pagination":${JSON.stringify(pagination)}}`;
}
