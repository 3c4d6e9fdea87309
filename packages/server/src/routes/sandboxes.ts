/** Sandbox CRUD, lifecycle, egress, bandwidth, ssh keys, access tokens (protocol.md §2.2, §2.3, §2.5). */
import { randomBytes } from "node:crypto";
import { apiError, validationError } from "@createos-sandbox/protocol";
import type { api } from "@createos-sandbox/protocol";
import { SANDBOX_STATUSES } from "@createos-sandbox/protocol/api";
import { DEFAULT_DISK_MIB, shapeById } from "../catalog.js";
import type { Ctx, Route } from "../http/server.js";
import type { CreateInput, ForkInput } from "../sandboxes.js";
import { hashSecret } from "../store/sqlite.js";
import type { SandboxPatch, SandboxStatus } from "../store/types.js";
import {
  Fields,
  MAX_EGRESS_RULES,
  MAX_SSH_KEYS,
  NAME_RE,
  absolutePathError,
  egressRuleError,
  mergeSshKeys,
  pageParams,
  sshKeyError,
} from "../validate.js";
import { bandwidthView, createResponse, page, sandboxView } from "../views.js";
import { type App, findNetwork, loadSandbox, paged, route } from "./common.js";
import { mountAtBoot } from "./disks.js";

/** `[]`, `["*"]` and absent all mean "allow all"; stored as `[]`. */
function normaliseEgress(rules: string[] | undefined): string[] | undefined {
  if (rules === undefined) return undefined;
  return rules.length === 1 && rules[0] === "*" ? [] : [...new Set(rules)];
}

function autoPauseRange(app: App) {
  const min = app.cfg.autoPauseMinSeconds;
  return { min, max: 86400, rangeMsg: `auto_pause_after_seconds must be between ${min} and 86400` };
}

async function parseCreate(app: App, ctx: Ctx): Promise<CreateInput> {
  const f = new Fields(ctx.body);
  const shapeId = f.str("shape", { required: true, max: 100 });
  const shape = shapeId ? shapeById(shapeId) : undefined;
  if (shapeId && !shape) f.fail("shape", `unknown shape: ${shapeId}`);
  const images = await app.images();
  const rootfs =
    f.str("rootfs", { max: 200 }) ?? images.find((i) => i.default)?.name ?? images[0]?.name ?? "devbox:1";
  if (f.has("rootfs") && !images.some((i) => i.name === rootfs))
    f.fail("rootfs", `unknown rootfs: ${rootfs}`);
  const name = f.str("name", {
    max: 63,
    re: NAME_RE,
    reMsg: "name must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
  });
  const disk = f.int("disk_mib", { min: 0, max: app.cfg.maxDiskMib });
  if (disk !== undefined && disk !== 0 && disk < 1024)
    f.fail("disk_mib", "disk_mib must be 0 (shape default) or at least 1024");
  const envs = f.envs("envs") ?? {};
  const egress = f.strings("egress", { max: MAX_EGRESS_RULES, item: egressRuleError });
  const keys = f.strings("ssh_pubkeys", { max: MAX_SSH_KEYS, item: sshKeyError });
  const ingress = f.bool("ingress_enabled") ?? false;
  const autoPause = f.int("auto_pause_after_seconds", autoPauseRange(app));
  const quota = f.raw.bandwidth_quota_bytes;
  if (quota !== undefined && quota !== null && quota !== 0) {
    f.fail(
      "bandwidth_quota_bytes",
      "bandwidth_quota_bytes is not settable at create; use bandwidth/recharge",
    );
  }
  const region = f.str("region", { max: 100 });
  if (region && region !== app.cfg.region)
    f.fail("region", `region ${region} is not served here (this is ${app.cfg.region})`);
  const hostId = f.str("host_id", { max: 200 });
  if (hostId && !app.hosts.byId(hostId))
    f.fail("host_id", `unknown host: ${hostId} (GET /v1/hosts lists them)`);
  const sel = f.raw.node_selector;
  if (sel !== undefined && sel !== null && (typeof sel !== "object" || Array.isArray(sel))) {
    f.fail("node_selector", "node_selector must be an object of strings");
  }
  // networks: [{id: net id or name}]
  const networkRefs: string[] = [];
  const nets = f.raw.networks;
  if (nets !== undefined && nets !== null) {
    if (!Array.isArray(nets) || nets.length > 16)
      f.fail("networks", "networks must be an array of {id} (at most 16)");
    else
      for (const n of nets) {
        const id = (n as { id?: unknown } | null)?.id;
        if (typeof id !== "string" || id === "" || id.length > 100)
          f.fail("networks", "each network needs an id (string)");
        else networkRefs.push(id);
      }
  }
  const disks = f.raw.disks;
  let wantsDisks = false;
  if (disks !== undefined && disks !== null) {
    if (!Array.isArray(disks)) f.fail("disks", "disks must be an array of {disk_id, mount_path, sub_path?}");
    else {
      for (const d of disks) checkDiskAttachment(f, d, "disks");
      wantsDisks = disks.length > 0;
    }
  }
  f.done();
  const network_ids: string[] = [];
  for (const ref of networkRefs) {
    const n = await findNetwork(app, ctx.principal!.user_id, ref);
    if (!n) throw validationError({ networks: `unknown network: ${ref}` });
    network_ids.push(n.id);
  }
  // Unknown disks and colliding mount paths are refused before any VM exists; mounted once it runs.
  if (wantsDisks) app.disks.resolve(ctx.principal!.user_id, disks as api.DiskAttachment[]);
  const s = shape!;
  return {
    shape: s.id,
    vcpu: s.vcpu,
    mem_mib: s.mem_mib,
    disk_mib: disk ? disk : (s.default_disk_mib ?? DEFAULT_DISK_MIB),
    rootfs,
    ...(name ? { name } : {}),
    envs,
    egress: normaliseEgress(egress) ?? [],
    ssh_pubkeys: keys ? mergeSshKeys([], keys) : [],
    ingress_enabled: ingress,
    ...(autoPause !== undefined ? { auto_pause_after_seconds: autoPause } : {}),
    ...(hostId ? { host_id: hostId } : {}),
    network_ids,
  };
}

export function checkDiskAttachment(f: Fields, d: unknown, field: string): void {
  if (typeof d !== "object" || d === null) {
    f.fail(field, "each disk needs disk_id and mount_path");
    return;
  }
  const { disk_id, mount_path, sub_path } = d as Record<string, unknown>;
  if (typeof disk_id !== "string" || disk_id === "") f.fail(`${field}.disk_id`, "disk_id is required");
  const mp = typeof mount_path === "string" ? absolutePathError(mount_path, "mount_path") : { x: "" };
  if (mp) f.fail(`${field}.mount_path`, "mount_path must be an absolute path");
  if (sub_path !== undefined && sub_path !== null) {
    if (typeof sub_path !== "string" || sub_path.startsWith("/") || sub_path.split("/").includes("..")) {
      f.fail(`${field}.sub_path`, "sub_path must be relative and must not contain '..'");
    }
  }
}

function parseFork(ctx: Ctx): ForkInput {
  const f = new Fields(ctx.body);
  const start_paused = f.bool("start_paused") ?? false;
  const keys = f.strings("ssh_pubkeys", { max: MAX_SSH_KEYS, item: sshKeyError });
  const egress = f.strings("egress", { max: MAX_EGRESS_RULES, item: egressRuleError });
  const ingress = f.bool("ingress_enabled");
  const envs = f.envs("envs");
  const quota = f.int("bandwidth_quota_bytes", { min: -1, max: Number.MAX_SAFE_INTEGER });
  f.done();
  const out: ForkInput = { start_paused };
  if (keys) out.ssh_pubkeys = mergeSshKeys([], keys);
  const eg = normaliseEgress(egress);
  if (eg) out.egress = eg;
  if (ingress !== undefined) out.ingress_enabled = ingress;
  if (envs) out.envs = envs;
  if (quota !== undefined) out.bandwidth_quota_bytes = quota;
  return out;
}

function tokenMeta(row: {
  access_token_hash?: string;
  access_token_hint?: string;
  access_token_created_at?: string;
  access_token_rotated_at?: string;
}): api.AccessTokenMeta {
  if (!row.access_token_hash) return { enabled: false };
  const m: api.AccessTokenMeta = { enabled: true };
  if (row.access_token_hint) m.token_hint = row.access_token_hint;
  if (row.access_token_created_at) m.created_at = row.access_token_created_at;
  if (row.access_token_rotated_at) m.rotated_at = row.access_token_rotated_at;
  return m;
}

/**
 * Stores a fresh access token's hash and hint, stamped now as created (a new token) or rotated. The token
 * itself is returned for the caller to see once; it is never stored.
 */
async function storeNewToken(
  app: App,
  id: string,
  kind: "create" | "rotate",
): Promise<{ token: string; at: string }> {
  const token = `sat_${randomBytes(24).toString("base64url")}`;
  const at = new Date().toISOString();
  const stamp: SandboxPatch =
    kind === "create"
      ? { access_token_created_at: at, clear: ["access_token_rotated_at"] }
      : { access_token_rotated_at: at };
  await app.store.updateSandbox(id, {
    access_token_hash: hashSecret(token),
    access_token_hint: `sat_…${token.slice(-4)}`,
    ...stamp,
  });
  return { token, at };
}

export function sandboxRoutes(app: App): Route[] {
  const view = (row: Parameters<typeof sandboxView>[0]) => sandboxView(row, app.cfg);
  const pollAfter = { "x-poll-after": "1" };
  return [
    route("POST /v1/sandboxes", { auth: "user", body: "json" }, async (ctx) => {
      const input = await parseCreate(app, ctx);
      const row = await app.sandboxes.create(ctx.principal!.user_id, ctx.principal!.user_id, input);
      ctx.logFields.sandbox_id = row.id;
      await mountAtBoot(app, row, ctx.body);
      return { data: createResponse(row, app.cfg) };
    }),
    route("GET /v1/sandboxes", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const status = ctx.query.status ?? undefined;
      if (status !== undefined && status !== "" && !SANDBOX_STATUSES.includes(status as SandboxStatus)) {
        throw validationError({ status: `unknown status: ${status.slice(0, 50)}` });
      }
      const res = await app.store.listSandboxes(ctx.principal!.user_id, {
        limit,
        offset,
        ...(status ? { status: status as SandboxStatus } : {}),
      });
      return { data: page(res.rows.map(view), res.total, limit, offset) };
    }),
    route("GET /v1/sandboxes/by-ip/:ip", { auth: "user", body: "none" }, async (ctx) => {
      const ip = ctx.params.ip ?? "";
      const row = await app.store.getSandboxByIp(ctx.principal!.user_id, ip);
      if (!row) throw apiError("sandbox_not_found", { id: ip.slice(0, 100) });
      return { data: view(row) };
    }),
    route("GET /v1/sandboxes/:id", { auth: "runtime", body: "none" }, async (ctx) => ({
      data: view(await loadSandbox(app, ctx)),
    })),
    route("PATCH /v1/sandboxes/:id", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      const ingress = f.bool("ingress_enabled");
      const secs = f.int("auto_pause_after_seconds", autoPauseRange(app));
      const disable = f.bool("disable_auto_pause");
      if (disable === true && f.has("auto_pause_after_seconds")) {
        f.fail("disable_auto_pause", "give either auto_pause_after_seconds or disable_auto_pause, not both");
      }
      f.done();
      const row = await loadSandbox(app, ctx);
      if (row.status === "destroyed" || row.status === "destroying" || row.status === "failed") {
        throw apiError("state_conflict", { action: "update", status: row.status });
      }
      await app.store.updateSandbox(row.id, {
        ...(ingress !== undefined ? { ingress_enabled: ingress } : {}),
        ...(secs !== undefined ? { auto_pause_after_seconds: secs } : {}),
        // A new timeout counts idleness from now, not from the last activity before it was set.
        ...(secs !== undefined ? { last_activity_at: Date.now() } : {}),
        ...(disable === true ? { clear: ["auto_pause_after_seconds"] } : {}),
      });
      return { data: view((await app.store.getSandbox(row.id))!) };
    }),
    route("DELETE /v1/sandboxes/:id", { auth: "user", body: "none" }, async (ctx) => ({
      data: await app.sandboxes.destroy(await loadSandbox(app, ctx)),
    })),
    route("POST /v1/sandboxes/:id/pause", { auth: "user", body: "json" }, async (ctx) => {
      const { code, row } = await app.sandboxes.pause(await loadSandbox(app, ctx));
      return { status: code, data: view(row), ...(code === 202 ? { headers: pollAfter } : {}) };
    }),
    route("POST /v1/sandboxes/:id/resume", { auth: "user", body: "json" }, async (ctx) => {
      const { code, row } = await app.sandboxes.resume(await loadSandbox(app, ctx));
      return { status: code, data: view(row), ...(code === 202 ? { headers: pollAfter } : {}) };
    }),
    route("POST /v1/sandboxes/:id/fork", { auth: "user", body: "json" }, async (ctx) => {
      const input = parseFork(ctx);
      const child = await app.sandboxes.fork(await loadSandbox(app, ctx), input);
      return { data: view(child) };
    }),
    route("POST /v1/sandboxes/:id/resize", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      const mib = f.int("disk_mib", { required: true, min: 1, max: app.cfg.maxDiskMib });
      f.done();
      const row = await app.sandboxes.resize(await loadSandbox(app, ctx), mib!);
      return { data: { id: row.id, disk_mib: row.disk_mib } };
    }),
    route("GET /v1/sandboxes/:id/egress", { auth: "user", body: "none" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      return { data: { id: row.id, egress: row.egress } };
    }),
    route("PUT /v1/sandboxes/:id/egress", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      const rules = f.strings("egress", { max: MAX_EGRESS_RULES, item: egressRuleError });
      f.done();
      const row = await loadSandbox(app, ctx);
      if (row.status === "destroyed" || row.status === "failed") {
        throw apiError("state_conflict", { action: "set egress on", status: row.status });
      }
      // Stored now; enforcement on the host lands with the networking issue.
      const egress = normaliseEgress(rules) ?? [];
      await app.store.updateSandbox(row.id, { egress });
      return { data: { id: row.id, egress } };
    }),
    route("GET /v1/sandboxes/:id/bandwidth", { auth: "user", body: "none" }, async (ctx) => ({
      data: bandwidthView(await loadSandbox(app, ctx)),
    })),
    route("POST /v1/sandboxes/:id/bandwidth/recharge", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      const add = f.int("add_bytes", { required: true, min: 1, max: 2 ** 50 });
      f.done();
      const row = await loadSandbox(app, ctx);
      if (row.bandwidth_quota_bytes >= 0) {
        await app.store.updateSandbox(row.id, { bandwidth_quota_bytes: row.bandwidth_quota_bytes + add! });
      }
      return { data: bandwidthView((await app.store.getSandbox(row.id))!) };
    }),
    route("POST /v1/sandboxes/:id/ssh-pubkeys", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      const keys = f.strings("keys", { max: MAX_SSH_KEYS, item: sshKeyError });
      if (!f.errs.keys && (!keys || keys.length === 0)) f.fail("keys", "keys must hold at least one key");
      f.done();
      const row = await loadSandbox(app, ctx);
      const merged = mergeSshKeys(row.ssh_pubkeys, keys!);
      if (merged.length > MAX_SSH_KEYS)
        throw validationError({ keys: `a sandbox holds at most ${MAX_SSH_KEYS} keys` });
      await app.store.updateSandbox(row.id, { ssh_pubkeys: merged });
      return { data: { count: merged.length } };
    }),
    route("POST /v1/sandboxes/:id/access-token", { auth: "user", body: "json" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      if (row.access_token_hash) throw apiError("access_token_exists", { id: row.id });
      const { token, at } = await storeNewToken(app, row.id, "create");
      return { data: { token, enabled: true, created_at: at } };
    }),
    route("GET /v1/sandboxes/:id/access-token", { auth: "user", body: "none" }, async (ctx) => ({
      data: tokenMeta(await loadSandbox(app, ctx)),
    })),
    route("POST /v1/sandboxes/:id/access-token/rotate", { auth: "user", body: "json" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      if (!row.access_token_hash) throw apiError("access_token_not_found", { id: row.id });
      const { token, at } = await storeNewToken(app, row.id, "rotate");
      app.forgetSandboxCredentials(row.id);
      return {
        data: {
          token,
          enabled: true,
          created_at: row.access_token_created_at ?? at,
          rotated_at: at,
        },
      };
    }),
    route("DELETE /v1/sandboxes/:id/access-token", { auth: "user", body: "none" }, async (ctx) => {
      const row = await loadSandbox(app, ctx);
      await app.store.updateSandbox(row.id, {
        clear: [
          "access_token_hash",
          "access_token_hint",
          "access_token_created_at",
          "access_token_rotated_at",
        ],
      });
      app.forgetSandboxCredentials(row.id);
      return { data: { enabled: false } };
    }),
  ];
}
