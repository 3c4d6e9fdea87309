/**
 * One template build on one host. The builder VM boots the deepest cached layer of this Dockerfile (the
 * committed disk after step k, keyed by a hash of the tenant, the base and every step up to k, so a rebuild that
 * changes the last step re-runs only that step) or the base image; each further RUN is an exec through the
 * guest agent, its output streamed into the log as it comes, and after each the disk is committed as the
 * next layer (`commitImage` with `keep`: the VM runs on). Last, the disk becomes the template's image.
 */
import { createHash } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import type { HostDaemon } from "@createos-sandbox/protocol";
import { publicMessage } from "../hosterr.js";
import type { Hosts } from "../hosts.js";
import type { BuildPlan, BuildStep } from "./dockerfile.js";
import type { TemplateSettings } from "./service.js";
import type { LogFrame, TemplateRow, TemplateStore } from "./store.js";

export class StepFailed extends Error {}

/** Bump when what a layer holds for the same steps changes (how steps run, what the builder adds). */
const LAYER_PROCEDURE = "template-layer v1";

/**
 * Layer key of the disk after steps[0..k], for `userId` only: a layer holds what its tenant's steps
 * fetched (private packages, tokens in the disk), so another tenant's same steps never boot it.
 */
export function layerKeys(plan: BuildPlan, userId: string): string[] {
  const h = createHash("sha256").update(`${LAYER_PROCEDURE}\0${userId}\0${plan.base}`);
  return plan.steps.map((st: BuildStep) => {
    h.update(`\0${JSON.stringify([st.argv, st.env, st.cwd, st.user])}`);
    return h.copy().digest("hex").slice(0, 40);
  });
}

export interface BuildCtx {
  row: TemplateRow;
  plan: BuildPlan;
  hosts: Pick<Hosts, "place">;
  store: TemplateStore;
  settings: TemplateSettings;
  log(level: LogFrame["level"], line: string): void;
}

export async function runBuild(c: BuildCtx): Promise<{ size_bytes: number }> {
  const { row, plan, settings: s, store } = c;
  const total = plan.steps.length + 1;
  const builder = `tb-${row.id.slice(4)}`;
  const keys = layerKeys(plan, row.user_id);
  const owner = row.user_id;
  const host = c.hosts.place(s.builderMemMib, plan.base);
  const daemon = host.daemon!;
  store.update(row.id, { status: "building", host_id: host.id });
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), s.buildTimeoutS * 1000);
  timer.unref();
  try {
    c.log("info", `Step 1/${total} : FROM ${plan.base}`);
    let start = plan.steps.length;
    while (start > 0 && !store.layer(keys[start - 1]!, owner, host.id)) start--;
    if (start) store.touchLayer(keys[start - 1]!, owner, host.id);
    const t0 = Date.now();
    try {
      await boot(c, daemon, builder, start ? store.layer(keys[start - 1]!, owner, host.id)! : plan.base);
    } catch (e) {
      if (!start) throw e;
      // a layer the host lost (or cannot boot): forget it and build from the base
      c.log(
        "info",
        ` ---> cached layer unusable (${publicMessage(e, { action: "boot" })}); building from ${plan.base}`,
      );
      store.dropLayer(keys[start - 1]!, owner, host.id);
      start = 0;
      await boot(c, daemon, builder, plan.base);
    }
    c.log("info", ` ---> builder VM up in ${Date.now() - t0} ms`);
    for (const [i, step] of plan.steps.entries()) {
      const label = `Step ${i + 2}/${total} : ${step.text}`;
      c.log("info", label);
      if (i < start) {
        c.log("info", " ---> Using cache");
        continue;
      }
      await runStep(c, daemon, builder, step, label, ac.signal);
      const layer = await daemon.commitImage(builder, `tpl_c${keys[i]}`, { keep: true });
      store.putLayer(keys[i]!, owner, host.id, layer.image);
    }
    if (plan.cwd !== "/") await daemon.exec(builder, { argv: ["mkdir", "-p", plan.cwd] });
    c.log("info", "Committing the builder's disk as the template image");
    return await daemon.commitImage(builder, row.id);
  } catch (e) {
    await daemon.destroy(builder).catch(() => undefined);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function boot(c: BuildCtx, daemon: HostDaemon, id: string, image: string) {
  const s = c.settings;
  return daemon.create({
    sandbox_id: id,
    hostname: "builder",
    image,
    vcpu: s.builderVcpu,
    mem_mib: s.builderMemMib,
    disk_mib: s.builderDiskMib,
    envs: {},
  });
}

async function runStep(
  c: BuildCtx,
  daemon: HostDaemon,
  builder: string,
  step: BuildStep,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  // Docker creates a WORKDIR that does not exist
  if (step.cwd !== "/") await daemon.exec(builder, { argv: ["mkdir", "-p", step.cwd] });
  const argv = step.user === "root" ? step.argv : ["runuser", "-u", step.user, "--", ...step.argv];
  const out = new LineSplitter((l) => c.log("info", l));
  const err = new LineSplitter((l) => c.log("info", l));
  const ts = Date.now();
  const res = await daemon.exec(
    builder,
    { argv, env: step.env, cwd: step.cwd },
    { onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) },
    signal,
  );
  out.end();
  err.end();
  const secs = ((Date.now() - ts) / 1000).toFixed(1);
  if (signal.aborted)
    throw new StepFailed(
      `${label}: build timed out after ${c.settings.buildTimeoutS} s (CREATEOS_SANDBOX_TEMPLATE_BUILD_TIMEOUT_S)`,
    );
  if (res.exit_code !== 0) {
    const why = res.error ?? (res.signal ? `killed by ${res.signal}` : `exit code ${res.exit_code}`);
    throw new StepFailed(`${label}: failed with ${why} after ${secs} s`);
  }
  c.log("info", ` ---> exit code 0 in ${secs} s`);
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
    this.buf += this.dec.end();
    if (this.buf) this.onLine(this.buf);
    this.buf = "";
  }
}
