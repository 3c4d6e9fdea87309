/**
 * Templates: submit → a build in the background → a host image sandboxes boot from. The build runs in a
 * builder VM of the base image (a sandbox VM with a larger disk and outbound network, never a Docker
 * daemon): each RUN is an exec through the guest agent with the ENV/WORKDIR/USER/SHELL/ARG in force, its
 * output streamed into the log line by line; the first failing step fails the build. Then the builder's
 * disk is committed on its host (`HostDaemon.commitImage`) as image `<template id>`, which `create` takes
 * like a built-in (cold boot once, warm snapshot from then on).
 */
import { apiError } from "@createos-sandbox/protocol";
import { SANDBOX_STATUSES } from "@createos-sandbox/protocol/api";
import { publicMessage } from "../hosterr.js";
import type { Hosts } from "../hosts.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/types.js";
import { newTemplateId } from "../ulid.js";
import { StepFailed, runBuild } from "./build.js";
import { type BuildPlan, DockerfileError, planDockerfile } from "./dockerfile.js";
import type { LogFrame, TemplateRow, TemplateStore } from "./store.js";

export interface TemplateSettings {
  buildsPerUser: number;
  buildTimeoutS: number;
  builderMemMib: number;
  builderDiskMib: number;
  builderVcpu: number;
  /** Step layers each host keeps for later builds (least recently used go first); 0 keeps none. */
  layerCache: number;
}

function num(env: NodeJS.ProcessEnv, key: string, def: number, min = 1): number {
  const v = env[key];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${key} must be an integer of at least ${min}, got ${v}`);
  return n;
}

export function templateSettings(env: NodeJS.ProcessEnv = process.env): TemplateSettings {
  return {
    buildsPerUser: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDS_PER_USER", 2),
    buildTimeoutS: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILD_TIMEOUT_S", 3600),
    builderMemMib: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_MEM_MIB", 1024),
    builderDiskMib: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_DISK_MIB", 8192),
    builderVcpu: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_VCPU", 2),
    layerCache: num(env, "CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE", 16, 0),
  };
}

export type FollowEvent = LogFrame | { final: true; status: string };

export const INTERRUPTED = "build interrupted by a server restart";

export class Templates {
  private readonly followers = new Map<string, Set<(e: FollowEvent) => void>>();

  constructor(
    readonly store: TemplateStore,
    private readonly hosts: Pick<Hosts, "place" | "daemonOf">,
    private readonly log: Logger,
    readonly settings: TemplateSettings,
    /** The sandbox rows, to know which images are still in use (absent: images are never removed). */
    private readonly sandboxes?: Pick<Store, "sandboxesInStatus">,
  ) {
    // A build runs in this process only: after a restart nothing will finish it.
    for (const row of store.active()) {
      this.emit(row.id, "error", `${INTERRUPTED}; submit it again`);
      store.update(row.id, { status: "failed", status_reason: INTERRUPTED });
    }
  }

  /** Validated Dockerfile → a pending row, its build started; 429 past the per-user build limit. */
  submit(userId: string, name: string, dockerfile: string, base?: string): TemplateRow {
    const plan = planDockerfile(dockerfile);
    if (base && base !== plan.base)
      throw new DockerfileError(`base ${base} differs from the Dockerfile's FROM ${plan.base}`);
    if (this.store.active(userId).length >= this.settings.buildsPerUser)
      throw apiError("template_builds_busy", { limit: this.settings.buildsPerUser });
    const row: TemplateRow = {
      id: newTemplateId(),
      user_id: userId,
      name,
      base: plan.base,
      status: "pending",
      ext4_size_bytes: 0,
      created_at: new Date().toISOString(),
      built_at: null,
      dockerfile,
      env: JSON.stringify(plan.env),
      cwd: plan.cwd,
      user: plan.user,
      host_id: null,
      status_reason: null,
      deleted_at: null,
      image_gone: 0,
    };
    this.store.insert(row);
    void this.build(row, plan).catch((e) => this.log.error("template build crashed", { id: row.id, err: e }));
    return row;
  }

  /** Subscribes to a build's frames; returns the unsubscribe. */
  follow(id: string, fn: (e: FollowEvent) => void): () => void {
    const set = this.followers.get(id) ?? new Set();
    this.followers.set(id, set);
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit(id: string, level: LogFrame["level"], line: string): void {
    const frame: LogFrame = { ts: new Date().toISOString(), level, line, attempt: 1 };
    this.store.appendLog(id, frame);
    for (const fn of this.followers.get(id) ?? []) fn(frame);
  }

  private finish(id: string, status: "ready" | "failed"): void {
    for (const fn of this.followers.get(id) ?? []) fn({ final: true, status });
    this.followers.delete(id);
  }

  private async build(row: TemplateRow, plan: BuildPlan): Promise<void> {
    const log = (level: LogFrame["level"], line: string) => this.emit(row.id, level, line);
    try {
      const img = await runBuild({
        row,
        plan,
        hosts: this.hosts,
        store: this.store,
        settings: this.settings,
        log,
      });
      this.store.update(row.id, {
        status: "ready",
        ext4_size_bytes: img.size_bytes,
        built_at: new Date().toISOString(),
      });
      log("info", `Successfully built ${row.id} (${img.size_bytes} bytes)`);
      this.finish(row.id, "ready");
      // Deleted while it was building: its image has no template to serve.
      if (this.store.get(row.id)?.deleted_at) this.collect();
    } catch (e) {
      // A failed step is the user's to read (the step, its exit code); anything else the host said names
      // its paths and free memory: the log line gets it, the template's log and reason the catalog's words.
      const msg =
        e instanceof StepFailed ? e.message : `build failed: ${publicMessage(e, { action: "build" })}`;
      if (!(e instanceof StepFailed)) this.log.warn("template build failed", { id: row.id, err: e });
      log("error", msg);
      this.store.update(row.id, { status: "failed", status_reason: msg.slice(0, 1000) });
      this.finish(row.id, "failed");
    }
    const hostId = this.store.get(row.id)?.host_id;
    if (hostId)
      await this.gcLayers(hostId).catch((e) => this.log.warn("template layer cleanup failed", { err: e }));
  }

  /**
   * Each step layer is a whole flattened disk, so the cache is capped per host: past
   * `CREATEOS_SANDBOX_TEMPLATE_LAYER_CACHE` layers the least recently used go (row first: a build that
   * looked one up just before finds its image gone, says so in its log and builds from the base).
   */
  async gcLayers(hostId: string): Promise<void> {
    for (const l of this.store.layersBeyond(hostId, this.settings.layerCache)) {
      this.store.dropLayer(l.hash, l.user_id, hostId);
      await this.hosts.daemonOf(hostId).deleteImage(l.image);
    }
  }

  /** A create's `rootfs` naming one of the user's templates (id or name), or undefined. */
  resolve(userId: string, ref: string): TemplateRow | undefined {
    const row = this.store.find(userId, ref);
    return row?.status === "ready" ? row : undefined;
  }

  /** What the template's WORKDIR and USER make the default of a sandbox's exec (undefined: not a template). */
  execDefaults(rootfs: string): { cwd: string; user: string } | undefined {
    if (!rootfs.startsWith("tpl_")) return undefined;
    const row = this.store.get(rootfs);
    return row ? { cwd: row.cwd, user: row.user } : undefined;
  }

  /** Refuses new creates from it; sandboxes made from it keep the host image until the last one is gone. */
  delete(row: TemplateRow): void {
    this.store.update(row.id, { deleted_at: new Date().toISOString() });
    this.collect();
  }

  /** A sandbox was destroyed: if it was the last one on a deleted template's image, the image goes. */
  sandboxEnded(rootfs: string): void {
    if (this.store.get(rootfs)?.deleted_at) this.collect();
  }

  private collect(): void {
    void this.gcImages().catch((e) => this.log.warn("template image cleanup failed", { err: e }));
  }

  /**
   * Removes from their hosts the images of deleted templates no live sandbox uses (paused ones boot from
   * them again). Runs at start, at delete, when a build of a deleted template ends and when a sandbox of
   * a deleted template is destroyed: an image outlives its template until both are past.
   */
  async gcImages(): Promise<void> {
    if (!this.sandboxes) return;
    const gone = this.store.deletedWithImage();
    if (!gone.length) return;
    const live = SANDBOX_STATUSES.filter((st) => st !== "destroyed" && st !== "failed");
    const used = new Set((await this.sandboxes.sandboxesInStatus(live)).map((r) => r.rootfs));
    for (const row of gone) {
      if (used.has(row.id) || !row.host_id) continue;
      await this.hosts.daemonOf(row.host_id).deleteImage(row.id);
      this.store.update(row.id, { image_gone: 1 });
    }
  }
}
