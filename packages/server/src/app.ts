/**
 * Wires the control plane together: store, HTTP server, lifecycle service, scheduler, image catalog, and
 * the host daemon once it is attached. `startServer()` listens at once; the engine is attached afterwards
 * (`attachDaemon`) so `/healthz` and `/readyz` answer while the engine opens and images build.
 */
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import type { HostDaemon } from "@createos-sandbox/protocol";
import type { ServerConfig } from "./config.js";
import { ImageCatalog } from "./default-image.js";
import { HttpCore, RateLimiter } from "./http/core.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { catalogRoutes } from "./routes/catalog.js";
import type { App } from "./routes/common.js";
import { diskRoutes } from "./routes/disks.js";
import { healthRoutes } from "./routes/health.js";
import { hostRoutes } from "./routes/hosts.js";
import { identityRoutes } from "./routes/identity.js";
import { metricsRoutes } from "./routes/metrics.js";
import { networkRoutes } from "./routes/networks.js";
import { processRoutes } from "./routes/processes.js";
import { sandboxRoutes } from "./routes/sandboxes.js";
import { streamRoutes, upgradeRoutes } from "./routes/streams.js";
import { templateRoutes } from "./routes/templates.js";
import { type HostRef, Sandboxes } from "./sandboxes.js";
import { Scheduler } from "./scheduler.js";
import { SqliteStore } from "./store/sqlite.js";
import type { Store } from "./store/types.js";

export interface RunningServer {
  url: string;
  port: number;
  app: App;
  store: Store;
  /** Hands the engine to the control plane: reconcile, subscribe to events, build the default image. */
  attachDaemon(daemon: HostDaemon): Promise<void>;
  close(): Promise<void>;
}

export async function startServer(cfg: ServerConfig, log: Logger, storeIn?: Store): Promise<RunningServer> {
  const store = storeIn ?? SqliteStore.open(join(cfg.dataDir, "db.sqlite"));
  const metrics = new Metrics();
  const host: HostRef = { daemon: undefined, id: hostname(), notReady: "host daemon not attached yet" };
  const sandboxes = new Sandboxes(store, host, cfg, log, metrics);
  const catalog = new ImageCatalog(host, log, cfg.defaultImage);
  const scheduler = new Scheduler({ store, host, sandboxes, log, intervalMs: cfg.schedulerIntervalMs });

  const app: App = {
    cfg,
    store,
    log,
    metrics,
    host,
    sandboxes,
    images: async () => catalog.images(),
    schedulerLastOk: () => scheduler.lastOk(),
    forgetSandboxCredentials: (id) => core.forget((p) => p.sandbox_id === id),
  };
  const routes = [
    ...healthRoutes(app),
    ...identityRoutes(app),
    ...catalogRoutes(app),
    ...hostRoutes(app),
    ...networkRoutes(app),
    ...diskRoutes(app),
    ...processRoutes(app),
    ...templateRoutes(),
    ...sandboxRoutes(app),
    ...streamRoutes(app),
    ...metricsRoutes(app),
  ];
  // biome-ignore lint/style/useConst: assigned below; app's callback reads it after construction
  let core: HttpCore;
  core = new HttpCore({
    cfg,
    store,
    log,
    metrics,
    limiter: new RateLimiter(cfg.rateLimitPerSecond, cfg.rateLimitBurst),
    routes,
    upgrades: upgradeRoutes(app),
  });
  const server: Server = createServer({ maxHeaderSize: cfg.maxHeaderBytes, requestTimeout: 0 }, core.handle);
  server.on("upgrade", core.handleUpgrade);
  server.on("clientError", core.handleClientError);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(cfg.port, cfg.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  scheduler.start();

  let unsubscribe: (() => void) | undefined;
  const attachDaemon = async (daemon: HostDaemon) => {
    const info = await daemon.info();
    host.id = info.id;
    host.daemon = daemon;
    await catalog.attach(daemon);
    unsubscribe = daemon.onEvent((e) => {
      void sandboxes.onHostEvent(e).catch((err) => log.error("host event failed", { event: e.type, err }));
    });
    await sandboxes.reconcile();
    catalog.ensureDefault(daemon, info.accel);
  };

  return {
    url,
    port,
    app,
    store,
    attachDaemon,
    close: async () => {
      scheduler.stop();
      catalog.stop();
      unsubscribe?.();
      await new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      });
      await store.close();
      log.flush();
    },
  };
}
