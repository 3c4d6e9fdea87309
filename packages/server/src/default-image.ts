/**
 * The image catalog and the default image. Until an engine is attached the catalog is the built-in
 * fallback; after that it is the engine's, refreshed every 30 s and after the default image is built.
 * The default image builds in the background while `host.notReady` tells its progress, so `/readyz`
 * answers 503 with the phase until it is done (or says why it failed).
 */
import type { Accel, HostDaemon } from "@createos-sandbox/protocol";
import { FALLBACK_ROOTFS, type RootfsInfo } from "./catalog.js";
import type { HostRef } from "./hosts.js";
import type { Logger } from "./log.js";

const REFRESH_MS = 30_000;

export class ImageCatalog {
  private list: RootfsInfo[] = [...FALLBACK_ROOTFS];
  private refresh: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    /** The configured default image; otherwise the catalog's default, its first entry, or devbox:1. */
    private readonly configured?: string,
  ) {}

  images(): RootfsInfo[] {
    return this.list;
  }

  /**
   * Loads the engine's catalog now (a failure keeps the current one) and refreshes it periodically. Every
   * host runs the same engine, so the first host attached is the catalog's source.
   */
  async attach(daemon: HostDaemon): Promise<void> {
    await this.load(daemon).catch((e) => this.log.warn("image catalog unavailable", { err: String(e) }));
    if (this.refresh) return;
    this.refresh = setInterval(() => void this.load(daemon).catch(() => undefined), REFRESH_MS);
    this.refresh.unref();
  }

  /** Starts building the default image on a host; returns at once, progress and outcome land in `host.notReady`. */
  ensureDefault(host: HostRef, daemon: HostDaemon, accel: Accel): void {
    const { log } = this;
    const def = this.configured ?? this.list.find((i) => i.default)?.name ?? this.list[0]?.name ?? "devbox:1";
    host.notReady = `building default image ${def}`;
    log.now("ensuring default image", { image: def, accel, host_id: host.id });
    const t0 = performance.now();
    let lastPhase = "";
    daemon
      .ensureImage(def, (p) => {
        // One log line per phase and tenth of progress, not one per callback.
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
        await this.load(daemon).catch(() => undefined);
        log.now("default image ready", { image: def, ms: Math.round(performance.now() - t0) });
      })
      .catch((e) => {
        host.notReady = `default image ${def} failed to build: ${e instanceof Error ? e.message : String(e)}`;
        log.error("default image build failed", { image: def, err: e });
      });
  }

  stop(): void {
    if (this.refresh) clearInterval(this.refresh);
  }

  private async load(daemon: HostDaemon): Promise<void> {
    const list = await daemon.images();
    if (list.length)
      this.list = list.map((i) => ({ name: i.name, description: i.description, default: i.default }));
  }
}
