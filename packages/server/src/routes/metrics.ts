/** Prometheus text exposition: request metrics plus sandbox counts by status, open streams, host readiness. */
import { isUp } from "../hosts.js";
import type { Route } from "../http/server.js";
import { type App, route } from "./common.js";

export function metricsRoutes(app: App): Route[] {
  return [
    route("GET /metrics", { auth: "none", body: "none" }, async (ctx) => {
      const text = await app.metrics.render(await app.store.statusCounts(), {
        createos_open_streams: [...app.sandboxes.openStreams.values()].reduce((a, b) => a + b, 0),
        createos_host_ready: app.hosts.anyReady() ? 1 : 0,
        createos_hosts_healthy: app.hosts.all().filter(isUp).length,
      });
      await ctx.reply.type(app.metrics.contentType).send(text);
      return undefined;
    }),
  ];
}
