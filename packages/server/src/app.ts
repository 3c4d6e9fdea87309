/**
 * Wires the control plane together: store, HTTP server, lifecycle service, scheduler, image catalog, and
 * the host daemons once they are attached. `startServer()` listens at once; hosts are attached afterwards
 * (`attachHost`) so `/healthz` and `/readyz` answer while the engine opens and images build.
 */
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { HostDaemon } from "@createos-sandbox/protocol";
import type { ServerConfig } from "./config.js";
import { ImageCatalog } from "./default-image.js";
import { Disks } from "./disks/service.js";
import { type HostRef, Hosts } from "./hosts.js";
import { createHttp } from "./http/server.js";
import { Ingress } from "./ingress/proxy.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { Overlay } from "./overlay/service.js";
import { catalogRoutes } from "./routes/catalog.js";
import type { App } from "./routes/common.js";
import { consoleRoutes } from "./routes/console.js";
import { diskRoutes } from "./routes/disks.js";
import { healthRoutes } from "./routes/health.js";
import { hostRoutes } from "./routes/hosts.js";
import { identityRoutes } from "./routes/identity.js";
import { metricsRoutes, serveMetrics } from "./routes/metrics.js";
import { networkRoutes } from "./routes/networks.js";
import { processRoutes } from "./routes/processes.js";
import { sandboxRoutes } from "./routes/sandboxes.js";
import { shellWsRoutes } from "./routes/shell-ws.js";
import { streamRoutes } from "./routes/streams.js";
import { templateRoutes } from "./routes/templates.js";
import { Sandboxes } from "./sandboxes.js";
import { Scheduler } from "./scheduler.js";
import { startGateway } from "./ssh/gateway.js";
import { SqliteStore } from "./store/sqlite.js";
import type { Store } from "./store/types.js";
import { Templates, templateSettings } from "./templates/service.js";
import { TemplateStore } from "./templates/store.js";
import { TenantStreams } from "./tenant-streams.js";

export interface RunningServer {
  url: string;
  port: number;
  app: App;
  store: Store;
  /** A host that is coming (the embedded engine while it opens): listed, not ready. */
  pendingHost(id: string): HostRef;
  /**
   * Hands a host daemon to the control plane: once it answers `info()` (retried while it does not), its
   * rows are reconciled, its events followed, the default image built on it, and it is health-checked.
   */
  attachHost(daemon: HostDaemon, url?: string, ref?: HostRef): Promise<void>;
  close(): Promise<void>;
}

export async function startServer(cfg: ServerConfig, log: Logger, storeIn?: Store): Promise<RunningServer> {
  const store = storeIn ?? SqliteStore.open(join(cfg.dataDir, "db.sqlite"));
  const metrics = new Metrics();
  // biome-ignore lint/style/useConst: assigned below; the hosts' recovery callback reads it later
  let sandboxes: Sandboxes;
  const hosts = new Hosts(
    log,
    // A host back from being down missed what changed meanwhile: its VMs' states, and a disk's rotated
    // keys (a rotation skips hosts that are down); mounting again hands it the keys stored now.
    async (h) => {
      await sandboxes.reconcile(h);
      if (h.daemon)
        await disks
          .remountHost(h.id, h.daemon, (id) => store.getSandbox(id))
          .catch((err) => log.error("disk remount failed", { host_id: h.id, err }));
    },
    cfg.hostd === "none" ? "no engine: CREATEOS_SANDBOX_HOSTD=none" : undefined,
  );
  const dbPath = join(cfg.dataDir, "db.sqlite");
  const overlay = new Overlay(dbPath, cfg, store, hosts, log);
  sandboxes = new Sandboxes(store, hosts, cfg, log, metrics, overlay);
  const catalog = new ImageCatalog(log, cfg.defaultImage);
  const templates = new Templates(new TemplateStore(cfg.dataDir), hosts, log, templateSettings(), store);
  sandboxes.onDestroyed = (rootfs) => templates.sandboxEnded(rootfs);
  const scheduler = new Scheduler({ store, hosts, sandboxes, log, intervalMs: cfg.schedulerIntervalMs });

  const disks = new Disks(dbPath, cfg.diskKeyFile ?? join(cfg.dataDir, "disk-key"), !!cfg.diskKeyFile, log);
  const app: App = {
    cfg,
    store,
    disks,
    log,
    metrics,
    hosts,
    sandboxes,
    tenantStreams: new TenantStreams(cfg),
    templates,
    images: async () => catalog.images(),
    schedulerLastOk: () => scheduler.lastOk(),
    forgetSandboxCredentials: (id) => http.admission.forget((p) => p.sandbox_id === id),
  };
  const routes = [
    ...healthRoutes(app),
    ...identityRoutes(app),
    ...catalogRoutes(app),
    ...hostRoutes(app),
    ...networkRoutes(app),
    ...diskRoutes(app),
    ...processRoutes(app),
    ...templateRoutes(templates),
    ...sandboxRoutes(app),
    ...streamRoutes(app),
    ...shellWsRoutes(app),
    ...metricsRoutes(app),
    ...consoleRoutes(),
  ];
  const http = await createHttp({ cfg, store, log, metrics, routes });
  // The edge listeners bind first: a port in use fails the start before the API answers, and what did
  // bind is closed again so the process can exit.
  const ingress = cfg.ingressListen ? await new Ingress(app).listen(cfg.ingressListen) : undefined;
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    gateway = cfg.sshListen ? await startGateway(app, cfg.sshListen) : undefined;
    await http.fastify.listen({ port: cfg.port, host: cfg.host });
  } catch (e) {
    await ingress?.close();
    await gateway?.close();
    throw e;
  }
  if (ingress) log.now("ingress listening", { url: ingress.url, domain: cfg.ingressDomain });
  if (gateway) log.now("ssh gateway listening", { address: gateway.address, port: gateway.port });
  const port = (http.server.address() as AddressInfo).port;
  const url = `http://${cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host}:${port}`;
  const metricsServer = cfg.metricsListen ? await serveMetrics(app, cfg.metricsListen) : undefined;
  if (metricsServer) log.now("metrics listening", { url: metricsServer.url });
  scheduler.start();
  hosts.start();

  let closed = false;
  const unsubscribe: (() => void)[] = [];
  const pendingHost = (id: string) =>
    hosts.add({ id, daemon: undefined, notReady: "host daemon not attached yet", healthy: true });
  const attachHost = async (daemon: HostDaemon, url?: string, refIn?: HostRef) => {
    const ref =
      refIn ?? hosts.add({ id: url ?? "local", daemon: undefined, notReady: "connecting", healthy: false });
    // A host daemon that is not up yet is waited for, not given up on: hosts may start in any order.
    let info: Awaited<ReturnType<HostDaemon["info"]>> | undefined;
    for (let attempt = 0; !closed; attempt++) {
      try {
        info = await daemon.info();
        break;
      } catch (e) {
        ref.notReady = `connecting: ${e instanceof Error ? e.message : String(e)}`;
        if (attempt === 0) log.warn("host daemon not answering yet", { url, err: ref.notReady });
        await new Promise((r) => setTimeout(r, 2000).unref());
      }
    }
    if (!info) return;
    if (hosts.all().some((h) => h !== ref && h.id === info.id))
      throw new Error(`two host daemons call themselves ${info.id}: give each its own --id`);
    Object.assign(ref, { id: info.id, info, daemon, healthy: true, notReady: info.not_ready_reason });
    log.now("host attached", { host_id: info.id, url, accel: info.accel, free_mib: info.free_mib });
    await catalog.attach(daemon);
    unsubscribe.push(
      daemon.onEvent((e) => {
        void sandboxes
          .onHostEvent(e, ref.id)
          .catch((err) => log.error("host event failed", { event: e.type, err }));
      }),
    );
    await sandboxes.reconcile(ref);
    await disks
      .remountHost(ref.id, daemon, (id) => store.getSandbox(id))
      .catch((err) => log.error("disk remount failed", { host_id: ref.id, err }));
    void templates.gcImages().catch((e) => log.warn("template image cleanup failed", { err: e }));
    catalog.ensureDefault(ref, daemon, info.accel);
  };

  return {
    url,
    port,
    app,
    store,
    pendingHost,
    attachHost,
    close: async () => {
      closed = true;
      scheduler.stop();
      hosts.stop();
      catalog.stop();
      for (const off of unsubscribe) off();
      metricsServer?.server.close();
      await ingress?.close();
      await gateway?.close();
      await http.fastify.close();
      disks.close();
      overlay.close();
      await store.close();
      templates.store.close();
      log.flush();
    },
  };
}
