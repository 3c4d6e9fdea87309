/**
 * Private networks and their members (protocol.md §2.6, §2.7); what the hosts are told is
 * overlay/service.ts. Another tenant's network is a 404 on every route, as an unknown one.
 */
import { apiError } from "@createos-sandbox/protocol";
import { type Static, Type } from "@sinclair/typebox";
import { mapHostdError } from "../hosterr.js";
import type { Route } from "../http/server.js";
import { str } from "../schema.js";
import { newNetworkId } from "../ulid.js";
import { RESOURCE_NAME_RE, pageParams } from "../validate.js";
import { networkView, page } from "../views.js";
import { type App, loadSandbox, mustFindNetwork, paged, requireRunning, route, userOf } from "./common.js";

/** The name of a network or a disk. */
export const resourceName = () =>
  str("name", {
    required: true,
    max: 63,
    re: RESOURCE_NAME_RE,
    reMsg: "name must match ^[a-z0-9][a-z0-9-]{0,62}$",
  });
const CreateBody = Type.Object({ name: resourceName() });
const AttachBody = Type.Object({ id: str("id", { required: true, max: 100 }) });
const json = (body: typeof CreateBody | typeof AttachBody) =>
  ({ auth: "user", body: "json", schema: { body } }) as const;

/** At most this many members are named in a `network_in_use` refusal. */
const NAMED_MEMBERS = 5;

export function networkRoutes(app: App): Route[] {
  const overlay = app.sandboxes.overlay;
  const nets = overlay.nets;
  return [
    route("GET /v1/networks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const res = nets.list(userOf(ctx), { limit, offset });
      return {
        data: page(
          res.rows.map((n) => networkView(n, { member_count: n.member_count })),
          res.total,
          limit,
          offset,
        ),
      };
    }),
    route("POST /v1/networks", json(CreateBody), async (ctx) => {
      const { name } = ctx.body as Static<typeof CreateBody>;
      if (nets.get(userOf(ctx), name)) throw apiError("name_taken", { kind: "network", name });
      if (nets.count(userOf(ctx)) >= app.cfg.maxNetworksPerTenant) {
        throw apiError("limit_networks", { limit: app.cfg.maxNetworksPerTenant });
      }
      const row = { id: newNetworkId(), user_id: userOf(ctx), name, created_at: new Date().toISOString() };
      let made: ReturnType<typeof nets.create>;
      try {
        made = nets.create(row);
      } catch (e) {
        if (/UNIQUE/.test(String(e))) throw apiError("name_taken", { kind: "network", name });
        throw e;
      }
      if (!made) throw apiError("overlay_pool_exhausted", { pool: overlay.pool.cidr });
      return { data: networkView(made, { member_count: 0 }) };
    }),
    route("GET /v1/networks/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const n = mustFindNetwork(app, userOf(ctx), ctx.params.ref!);
      return { data: networkView(n, { members: overlay.members(n.id) }) };
    }),
    route("DELETE /v1/networks/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const n = mustFindNetwork(app, userOf(ctx), ctx.params.ref!);
      const { deleted, members } = nets.delete(n.id);
      if (!deleted) {
        const named = members.slice(0, NAMED_MEMBERS).map((m) => `${m.name} ${m.sandbox_id}`);
        if (members.length > NAMED_MEMBERS) named.push("…");
        throw apiError("network_in_use", { id: n.id, count: members.length, members: named.join(", ") });
      }
      return { data: { ok: true } };
    }),
    route("POST /v1/sandboxes/:id/networks", json(AttachBody), async (ctx) => {
      const ref = (ctx.body as Static<typeof AttachBody>).id;
      const row = await loadSandbox(app, ctx);
      const n = mustFindNetwork(app, userOf(ctx), ref);
      requireRunning(row, "attach a network to");
      // Attaching again is a no-op: the membership and its address stay as they are.
      if (!overlay.nets.networksOf(row.id).includes(n.id)) {
        await overlay.attach(row, n).catch((e) => {
          throw mapHostdError(e, { action: "attach a network to" });
        });
      }
      return { data: { ok: true } };
    }),
    route("DELETE /v1/sandboxes/:id/networks/:net", { auth: "user", body: "none" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      const ref = ctx.params.net!;
      const n = mustFindNetwork(app, userOf(ctx), ref);
      if (!overlay.nets.networksOf(row.id).includes(n.id))
        throw apiError("network_not_found", { id: `${ref.slice(0, 100)} (attached to ${row.id})` });
      await overlay.detach(row, n.id).catch((e) => {
        throw mapHostdError(e, { action: "detach a network from" });
      });
      return { data: { ok: true } };
    }),
  ];
}
