/**
 * Prometheus text exposition: request metrics plus sandbox counts by status, open streams, host readiness.
 * The counts span every tenant, so on the API's address they need the admin user's API key; an operator
 * may instead serve them without auth on an address of their own (CREATEOS_SANDBOX_METRICS_LISTEN).
 */
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { apiError } from "@createos-sandbox/protocol";
import { isUp } from "../hosts.js";
import type { Route } from "../http/server.js";
import { type App, route, userOf } from "./common.js";

async function metricsText(app: App): Promise<string> {
  return app.metrics.render(await app.store.statusCounts(), {
    createos_open_streams: [...app.sandboxes.openStreams.values()].reduce((a, b) => a + b, 0),
    createos_host_ready: app.hosts.anyReady() ? 1 : 0,
    createos_hosts_healthy: app.hosts.all().filter(isUp).length,
  });
}

export function metricsRoutes(app: App): Route[] {
  let adminId: string | undefined;
  return [
    route("GET /metrics", { auth: "user", body: "none" }, async (ctx) => {
      adminId ??= (await app.store.getUserByName("admin"))?.id;
      if (adminId === undefined || userOf(ctx) !== adminId) throw apiError("metrics_forbidden");
      await ctx.reply.type(app.metrics.contentType).send(await metricsText(app));
      return undefined;
    }),
  ];
}

/** `host:port` (`[v6]:port`) → the listen arguments; throws on anything else. */
export function parseListen(
  spec: string,
  name = "CREATEOS_SANDBOX_METRICS_LISTEN",
): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(spec);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`${name} must be host:port, got ${spec}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** The operator's metrics listener: `GET /metrics` and nothing else, no auth (keep it off public networks). */
export async function serveMetrics(app: App, spec: string): Promise<{ server: Server; url: string }> {
  const { host, port } = parseListen(spec);
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    metricsText(app).then(
      (t) => res.writeHead(200, { "content-type": app.metrics.contentType }).end(t),
      (e) => {
        app.log.error("metrics render failed", { err: e });
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return { server, url: `http://${host.includes(":") ? `[${host}]` : host}:${a.port}` };
}
