/**
 * Networks and their members (protocol.md §2.6, §2.7). The rows are real; the overlay wiring lands with
 * the networking issue.
 */
import { apiError } from "@createos-sandbox/protocol";
import { type Static, Type } from "@sinclair/typebox";
import type { Route } from "../http/server.js";
import { str } from "../schema.js";
import { newNetworkId } from "../ulid.js";
import { RESOURCE_NAME_RE, pageParams } from "../validate.js";
import { networkView, page } from "../views.js";
import { type App, findNetwork, loadSandbox, paged, requireRunning, route, userOf } from "./common.js";

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

export function networkRoutes(app: App): Route[] {
  return [
    route("GET /v1/networks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const res = await app.store.listNetworks(userOf(ctx), { limit, offset });
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
      if (await app.store.getNetwork(userOf(ctx), name))
        throw apiError("name_taken", { kind: "network", name });
      if ((await app.store.countNetworks(userOf(ctx))) >= app.cfg.maxNetworksPerTenant) {
        throw apiError("limit_networks", { limit: app.cfg.maxNetworksPerTenant });
      }
      const row = {
        id: newNetworkId(),
        user_id: userOf(ctx),
        name,
        created_at: new Date().toISOString(),
      };
      try {
        await app.store.createNetwork(row);
      } catch (e) {
        if (/UNIQUE/.test(String(e))) throw apiError("name_taken", { kind: "network", name });
        throw e;
      }
      return { data: networkView(row, { member_count: 0 }) };
    }),
    route("GET /v1/networks/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const ref = ctx.params.ref!;
      const n = await findNetwork(app, userOf(ctx), ref);
      if (!n) throw apiError("network_not_found", { id: ref.slice(0, 100) });
      return { data: networkView(n, { members: await app.store.networkMembers(n.id) }) };
    }),
    route("DELETE /v1/networks/:ref", { auth: "user", body: "none" }, async (ctx) => {
      const ref = ctx.params.ref!;
      const n = await findNetwork(app, userOf(ctx), ref);
      if (!n) throw apiError("network_not_found", { id: ref.slice(0, 100) });
      const members = await app.store.networkMembers(n.id);
      if (members.length) throw apiError("network_in_use", { id: n.id, count: members.length });
      await app.store.deleteNetwork(n.id);
      return { data: { ok: true } };
    }),
    route("POST /v1/sandboxes/:id/networks", json(AttachBody), async (ctx) => {
      const ref = (ctx.body as Static<typeof AttachBody>).id;
      const row = await loadSandbox(app, ctx);
      const n = await findNetwork(app, userOf(ctx), ref);
      if (!n) throw apiError("network_not_found", { id: ref });
      requireRunning(row, "attach a network to");
      await app.store.addNetworkMember(n.id, row.id);
      return { data: { ok: true } };
    }),
    route("DELETE /v1/sandboxes/:id/networks/:net", { auth: "user", body: "none" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      const ref = ctx.params.net!;
      const n = await findNetwork(app, userOf(ctx), ref);
      if (!n || !(await app.store.removeNetworkMember(n.id, row.id))) {
        throw apiError("network_not_found", { id: `${ref.slice(0, 100)} (attached to ${row.id})` });
      }
      return { data: { ok: true } };
    }),
  ];
}
