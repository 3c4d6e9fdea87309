/**
 * The host daemons behind this control plane (protocol.md §2.1). Every user may list them; only the
 * admin user (the operator, as for /metrics) sees a host's address while it is known by that alone and
 * the underlying error of one not ready — addresses, sockets, paths. The others get `/readyz`'s words.
 */
import type { api } from "@createos-sandbox/protocol";
import { publicHostId } from "../hosterr.js";
import { isUp } from "../hosts.js";
import type { Route } from "../http/server.js";
import { pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, isAdmin, paged, route } from "./common.js";

export function hostRoutes(app: App): Route[] {
  return [
    route("GET /v1/hosts", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      // A fresh reading where the host answers within a second, the health check's last one otherwise: a
      // listing never waits long on a slow host.
      await app.hosts.refresh(1000);
      const operator = await isAdmin(app, ctx);
      const hosts: api.HostPublic[] = app.hosts.all().map((ref, i) => {
        const info = ref.info;
        const h: api.HostPublic = {
          id: operator ? ref.id : publicHostId(ref.id, i),
          status: isUp(ref) ? (info?.status ?? "active") : "dead",
          free_mib: info?.free_mib ?? 0,
          vm_count: info?.vm_count ?? 0,
          healthy: isUp(ref),
        };
        if (info?.rootfses.length) h.rootfses = info.rootfses;
        if (info?.accel) h.accel = info.accel;
        if (info?.mem_total_mib !== undefined) h.mem_total_mib = info.mem_total_mib;
        if (info?.promised_mib !== undefined) h.promised_mib = info.promised_mib;
        if (info?.vcpus !== undefined) h.vcpus = info.vcpus;
        const why = operator ? app.hosts.whyNot(ref) : app.hosts.publicWhyNot(ref);
        if (why) h.not_ready_reason = why;
        return h;
      });
      return { data: page(hosts.slice(offset, offset + limit), hosts.length, limit, offset) };
    }),
  ];
}
