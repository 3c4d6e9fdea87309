import { isUp } from "../hosts.js";
/** Prometheus text exposition: request metrics plus sandbox counts by status, open streams, host readiness. */
import type { Route } from "../http/core.js";
import { type App, route } from "./common.js";

export function metricsRoutes(app: App): Route[] {
  return [
    route("GET /metrics", { auth: "none", body: "none" }, async (ctx) => {
      const byState = await app.store.statusCounts();
      const text = app.metrics.render(byState, {
        createos_open_streams: [...app.sandboxes.openStreams.values()].reduce((a, b) => a + b, 0),
        createos_host_ready: app.hosts.anyReady() ? 1 : 0,
        createos_hosts_healthy: app.hosts.all().filter(isUp).length,
      });
      ctx.res.writeHead(200, { "content-type": "text/plain; version=0.0.4", "x-request-id": ctx.reqId });
      ctx.res.end(text);
      return undefined;
    }),
  ];
}
