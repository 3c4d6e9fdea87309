/**
 * Templates: submit → a build in the background → a host image sandboxes boot from. The build runs in a
 * builder VM of the base image (a sandbox VM with a larger disk and outbound network, never a Docker
 * daemon): each RUN is an exec through the guest agent with the ENV/WORKDIR/USER/SHELL/ARG in force, its
 * output streamed into the log line by line; the first failing step fails the build. Then the builder's
 * disk is committed on its host (`HostDaemon.commitImage`) as image `<template id>`, which `create` takes
 * like a built-in (cold boot once, warm snapshot from then on).
 */
import { StringDecoder } from "node:string_decoder";
import { type HostDaemon, apiError } from "@createos-sandbox/protocol";
import type { Hosts } from "../hosts.js";
import type { Logger } from "../log.js";
import { newTemplateId } from "../ulid.js";
import { type BuildPlan, DockerfileError, planDockerfile } from "./dockerfile.js";
import type { LogFrame, TemplateRow, TemplateStore } from "./store.js";

export interface TemplateSettings {
  buildsPerUser: number;
  buildTimeoutS: number;
  builderMemMib: number;
  builderDiskMib: number;
  builderVcpu: number;
}

function num(env: NodeJS.ProcessEnv, key: string, def: number): number {
  const v = env[key];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${key} must be a positive integer, got ${v}`);
  return n;
}

export function templateSettings(env: NodeJS.ProcessEnv = process.env): TemplateSettings {
  return {
    buildsPerUser: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDS_PER_USER", 2),
    buildTimeoutS: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILD_TIMEOUT_S", 3600),
    builderMemMib: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_MEM_MIB", 1024),
    builderDiskMib: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_DISK_MIB", 8192),
    builderVcpu: num(env, "CREATEOS_SANDBOX_TEMPLATE_BUILDER_VCPU", 2),
  };
}

export type FollowEvent = LogFrame | { final: true; status: string };

export const INTERRUPTED = "build interrupted by a server restart";

class StepFailed extends Error {}

export class Templates {
  private readonly followers = new Map<string, Set<(e: FollowEvent) => void>>();

  constructor(
    readonly store: TemplateStore,
    private readonly hosts: Pick<Hosts, "place">,
    private readonly log: Logger,
    readonly settings: TemplateSettings,
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
    const s = this.settings;
    const total = plan.steps.length + 1;
    const builder = `tb-${row.id.slice(4)}`;
    let daemon: HostDaemon | undefined;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), s.buildTimeoutS * 1000);
    timer.unref();
    try {
      const host = this.hosts.place(s.builderMemMib, plan.base);
      daemon = host.daemon!;
      this.store.update(row.id, { status: "building", host_id: host.id });
      this.emit(row.id, "info", `Step 1/${total} : FROM ${plan.base}`);
      const t0 = Date.now();
      await daemon.create({
        sandbox_id: builder,
        hostname: "builder",
        image: plan.base,
        vcpu: s.builderVcpu,
        mem_mib: s.builderMemMib,
        disk_mib: s.builderDiskMib,
        envs: {},
      });
      this.emit(row.id, "info", ` ---> builder VM up in ${Date.now() - t0} ms`);
      for (const [i, step] of plan.steps.entries()) {
        const label = `Step ${i + 2}/${total} : ${step.text}`;
        this.emit(row.id, "info", label);
        if (step.cwd !== "/") await daemon.exec(builder, { argv: ["mkdir", "-p", step.cwd] });
        const argv = step.user === "root" ? step.argv : ["runuser", "-u", step.user, "--", ...step.argv];
        const out = new LineSplitter((l) => this.emit(row.id, "info", l));
        const err = new LineSplitter((l) => this.emit(row.id, "info", l));
        const ts = Date.now();
        const res = await daemon.exec(
          builder,
          { argv, env: step.env, cwd: step.cwd },
          { onStdout: (c) => out.push(c), onStderr: (c) => err.push(c) },
          ac.signal,
        );
        out.end();
        err.end();
        const secs = ((Date.now() - ts) / 1000).toFixed(1);
        if (ac.signal.aborted)
          throw new StepFailed(
            `${label}: build timed out after ${s.buildTimeoutS} s (CREATEOS_SANDBOX_TEMPLATE_BUILD_TIMEOUT_S)`,
          );
        if (res.exit_code !== 0) {
          const why = res.error ?? (res.signal ? `killed by ${res.signal}` : `exit code ${res.exit_code}`);
          throw new StepFailed(`${label}: failed with ${why} after ${secs} s`);
        }
        this.emit(row.id, "info", ` ---> exit code 0 in ${secs} s`);
      }
      if (plan.cwd !== "/") await daemon.exec(builder, { argv: ["mkdir", "-p", plan.cwd] });
      this.emit(row.id, "info", "Committing the builder's disk as the template image");
      const img = await daemon.commitImage(builder, row.id);
      this.store.update(row.id, {
        status: "ready",
        ext4_size_bytes: img.size_bytes,
        built_at: new Date().toISOString(),
      });
      this.emit(row.id, "info", `Successfully built ${row.id} (${img.size_bytes} bytes)`);
      this.finish(row.id, "ready");
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      this.emit(row.id, "error", e instanceof StepFailed ? msg : `build failed: ${msg}`);
      this.store.update(row.id, { status: "failed", status_reason: msg.slice(0, 1000) });
      await daemon?.destroy(builder).catch(() => undefined);
      this.finish(row.id, "failed");
    } finally {
      clearTimeout(timer);
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

  /** Refuses new creates from it; sandboxes made from it keep the host image (it stays on the host). */
  delete(row: TemplateRow): void {
    this.store.update(row.id, { deleted_at: new Date().toISOString() });
  }
}

/** Bytes → complete lines (the last partial one on `end`), so each log frame is one line of output. */
class LineSplitter {
  private buf = "";
  private readonly dec = new StringDecoder("utf8");
  constructor(private readonly onLine: (l: string) => void) {}
  push(chunk: Buffer): void {
    this.buf += this.dec.write(chunk);
    const parts = this.buf.split(/\r?\n/);
    this.buf = parts.pop()!;
    for (const p of parts) this.onLine(p);
  }
  end(): void {
    if (this.buf) this.onLine(this.buf);
    this.buf = "";
  }
}
