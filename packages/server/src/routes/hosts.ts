/** The host daemons behind this control plane (protocol.md §2.1). */
import type { api } from "@createos-sandbox/protocol";
import { isUp } from "../hosts.js";
import type { Route } from "../http/server.js";
import { pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, paged, route } from "./common.js";

export function hostRoutes(app: App): Route[] {
  return [
    route("GET /v1/hosts", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      // A fresh reading where the host answers within a second, the health check's last one otherwise: a
      // listing never waits long on a slow host.
      await app.hosts.refresh(1000);
      const hosts: api.HostPublic[] = app.hosts.all().map((ref) => {
        const info = ref.info;
        const h: api.HostPublic = {
          id: ref.id,
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
        const why = ref.notReady ?? (ref.healthy ? undefined : ref.lastError);
        if (why) h.not_ready_reason = why;
        return h;
      });
      return { data: page(hosts.slice(offset, offset + limit), hosts.length, limit, offset) };
    }),
  ];
}
