/** The host daemons behind this control plane (protocol.md §2.1). */
import type { api } from "@createos-sandbox/protocol";
import type { Route } from "../http/core.js";
import { pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, route } from "./common.js";

export function hostRoutes(app: App): Route[] {
  return [
    route("GET /v1/hosts", { auth: "user", body: "none" }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const d = app.host.daemon;
      const hosts: api.HostPublic[] = [];
      if (d) {
        const info = await d.info();
        const h: api.HostPublic = {
          id: info.id,
          status: info.status,
          free_mib: info.free_mib,
          vm_count: info.vm_count,
        };
        if (info.rootfses.length) h.rootfses = info.rootfses;
        hosts.push(h);
      }
      return { data: page(hosts.slice(offset, offset + limit), hosts.length, limit, offset) };
    }),
  ];
}
