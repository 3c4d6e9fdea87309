/**
 * Wires the control plane together: store, HTTP server, lifecycle service, auto-pause scheduler, and the
 * host daemon once it is attached. `startServer()` listens at once; the engine is attached afterwards
 * (`attachDaemon`) so `/healthz` and `/readyz` answer while the engine opens and images build.
 */
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import type { HostDaemon } from "@createos-sandbox/protocol";
import { FALLBACK_ROOTFS, type RootfsInfo } from "./catalog.js";
import type { ServerConfig } from "./config.js";
import { HttpCore, RateLimiter } from "./http/core.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import type { App } from "./routes/common.js";
import { miscRoutes } from "./routes/misc.js";
import { sandboxRoutes } from "./routes/sandboxes.js";
import { streamRoutes, upgradeRoutes } from "./routes/streams.js";
import { type HostRef, Sandboxes } from "./sandboxes.js";
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
  let images: RootfsInfo[] = [...FALLBACK_ROOTFS];
  let lastOk: number | undefined;

  const app: App = {
    cfg,
    store,
    log,
    metrics,
    host,
    sandboxes,
    images: async () => images,
    schedulerLastOk: () => lastOk,
    forgetSandboxCredentials: (id) => core.forget((p) => p.sandbox_id === id),
  };
  const routes = [...miscRoutes(app), ...sandboxRoutes(app), ...streamRoutes(app)];
  routes.push({
    method: "GET",
    pattern: "/metrics",
    auth: "none",
    body: "none",
    handler: async (ctx) => {
      const byState = await store.statusCounts();
      const text = metrics.render(byState, {
        createos_open_streams: [...sandboxes.openStreams.values()].reduce((a, b) => a + b, 0),
        createos_host_ready: host.daemon && !host.notReady ? 1 : 0,
      });
      ctx.res.writeHead(200, { "content-type": "text/plain; version=0.0.4", "x-request-id": ctx.reqId });
      ctx.res.end(text);
      return undefined;
    },
  });
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

  // The auto-pause scheduler: one pass every interval, never overlapping.
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const pass = async () => {
    const now = Date.now();
    for (const id of sandboxes.openStreams.keys()) await store.touchActivity(id, now);
    if (host.daemon) {
      for (const row of await store.idleSandboxes(now)) {
        if (sandboxes.openStreams.has(row.id) || sandboxes.isLocked(row.id)) continue;
        log.info("auto-pause", {
          sandbox_id: row.id,
          idle_s: Math.round((now - row.last_activity_at) / 1000),
        });
        await sandboxes
          .pause(row, `auto-pause after ${row.auto_pause_after_seconds}s idle`)
          .catch((e) => log.warn("auto-pause refused", { sandbox_id: row.id, err: String(e) }));
      }
      const daemon = host.daemon;
      for (const row of await store.sandboxesInStatus(["destroying"])) {
        if (sandboxes.isLocked(row.id)) continue;
        void sandboxes
          .withLock(row.id, () => sandboxes.completeDestroy(daemon, row.id))
          .catch((e) => log.warn("destroy retry failed", { sandbox_id: row.id, err: String(e) }));
      }
    }
    lastOk = performance.now();
  };
  const loop = () => {
    if (stopped) return;
    pass()
      .catch((e) => log.error("scheduler pass failed", { err: e }))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, cfg.schedulerIntervalMs);
      });
  };
  loop();

  let unsubscribe: (() => void) | undefined;
  let refreshImages: NodeJS.Timeout | undefined;

  const attachDaemon = async (daemon: HostDaemon) => {
    const info = await daemon.info();
    host.id = info.id;
    host.daemon = daemon;
    const loadImages = async () => {
      const list = await daemon.images();
      if (list.length)
        images = list.map((i) => ({ name: i.name, description: i.description, default: i.default }));
    };
    await loadImages().catch((e) => log.warn("image catalog unavailable", { err: String(e) }));
    refreshImages = setInterval(() => void loadImages().catch(() => undefined), 30_000);
    refreshImages.unref();
    unsubscribe = daemon.onEvent((e) => {
      void sandboxes.onHostEvent(e).catch((err) => log.error("host event failed", { event: e.type, err }));
    });
    await sandboxes.reconcile();
    const def = cfg.defaultImage ?? images.find((i) => i.default)?.name ?? images[0]?.name ?? "devbox:1";
    host.notReady = `building default image ${def}`;
    log.now("ensuring default image", { image: def, accel: info.accel });
    const t0 = performance.now();
    let lastPhase = "";
    daemon
      .ensureImage(def, (p) => {
        const key = `${p.phase}:${p.fraction === undefined ? "" : Math.floor(p.fraction * 10)}`;
        if (key !== lastPhase) {
          lastPhase = key;
          log.now("image build progress", {
            image: def,
            phase: p.phase,
            fraction: p.fraction,
            message: p.message,
          });
        }
        host.notReady = `building default image ${def}: ${p.phase}`;
      })
      .then(async () => {
        const after = await daemon.info();
        host.notReady = after.not_ready_reason;
        await loadImages().catch(() => undefined);
        log.now("default image ready", { image: def, ms: Math.round(performance.now() - t0) });
      })
      .catch((e) => {
        host.notReady = `default image ${def} failed to build: ${e instanceof Error ? e.message : String(e)}`;
        log.error("default image build failed", { image: def, err: e });
      });
  };

  return {
    url,
    port,
    app,
    store,
    attachDaemon,
    close: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (refreshImages) clearInterval(refreshImages);
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
