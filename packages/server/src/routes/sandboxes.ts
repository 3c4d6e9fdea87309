/** Sandbox CRUD, lifecycle, egress, bandwidth, ssh keys, access tokens (protocol.md §2.2, §2.3, §2.5). */
import { randomBytes } from "node:crypto";
import { apiError, validationError } from "@createos-sandbox/protocol";
import type { api } from "@createos-sandbox/protocol";
import { SANDBOX_STATUSES } from "@createos-sandbox/protocol/api";
import type { Static, TSchema } from "@sinclair/typebox";
import type { Ctx, Route } from "../http/server.js";
import { bandwidth, egressView, recharge, setEgress } from "../netpolicy.js";
import { hashSecret } from "../store/sqlite.js";
import type { SandboxPatch } from "../store/types.js";
import { MAX_SSH_KEYS, SandboxListQuery, mergeSshKeys, pageParams } from "../validate.js";
import { bandwidthView, createResponse, sandboxPageJson, sandboxView, sandboxViewJson } from "../views.js";
import { type App, loadSandbox, route } from "./common.js";
import { bootDisks, mountAtBoot } from "./disks.js";

type Errs = Record<string, string>;
import {
  checkCreate,
  checkEgress,
  checkPatch,
  createBody,
  createInput,
  egressBody,
  forkBody,
  forkInput,
  normaliseEgress,
  patchBody,
  rechargeBody,
  resizeBody,
  sshKeysBody,
} from "./sandbox-bodies.js";

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
  const json = (schema: TSchema) => ({
    auth: "user" as const,
    body: "json" as const,
    schema: { body: schema },
  });
  const create = { ...json(createBody(app)), check: (ctx: Ctx, e: Errs) => checkCreate(app, ctx, e) };
  const patch = { ...json(patchBody(app)), check: checkPatch };
  const list = { auth: "user" as const, body: "none" as const, schema: { querystring: SandboxListQuery } };
  return [
    route("POST /v1/sandboxes", create, async (ctx) => {
      const input = await createInput(app, ctx);
      // Resolved once, before the VM: the disks mounted after boot are these, whatever happens meanwhile.
      const disks = bootDisks(app, ctx);
      const row = await app.sandboxes.create(ctx.principal!.user_id, ctx.principal!.user_id, input);
      ctx.logFields.sandbox_id = row.id;
      await mountAtBoot(app, row, disks);
      return { data: createResponse(row, app.cfg) };
    }),
    route("GET /v1/sandboxes", list, async (ctx) => {
      const q = ctx.query as SandboxListQuery;
      const { limit, offset } = pageParams(q);
      const res = await app.store.listSandboxes(ctx.principal!.user_id, {
        limit,
        offset,
        ...(q.status ? { status: q.status } : {}),
      });
      return { json: sandboxPageJson(res, limit, offset, app.cfg) };
    }),
    route("GET /v1/sandboxes/by-ip/:ip", { auth: "user", body: "none" }, async (ctx) => {
      const ip = ctx.params.ip ?? "";
      const row = await app.store.getSandboxByIp(ctx.principal!.user_id, ip);
      if (!row) throw apiError("sandbox_not_found", { id: ip.slice(0, 100) });
      return { data: view(row) };
    }),
    route("GET /v1/sandboxes/:id", { auth: "runtime", body: "none" }, async (ctx) => ({
      json: sandboxViewJson(await loadSandbox(app, ctx), app.cfg),
    })),
    route("PATCH /v1/sandboxes/:id", patch, async (ctx) => {
      const b = ctx.body as Static<ReturnType<typeof patchBody>>;
      const ingress = b.ingress_enabled ?? undefined;
      const secs = b.auto_pause_after_seconds ?? undefined;
      const disable = b.disable_auto_pause;
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
    route("POST /v1/sandboxes/:id/fork", { ...json(forkBody), check: checkEgress }, async (ctx) => {
      const parent = await loadSandbox(app, ctx);
      const child = await app.sandboxes.fork(parent, forkInput(app, ctx));
      return { data: view(child) };
    }),
    route("POST /v1/sandboxes/:id/resize", json(resizeBody(app)), async (ctx) => {
      const mib = (ctx.body as { disk_mib: number }).disk_mib;
      const row = await app.sandboxes.resize(await loadSandbox(app, ctx), mib);
      return { data: { id: row.id, disk_mib: row.disk_mib } };
    }),
    route("GET /v1/sandboxes/:id/egress", { auth: "user", body: "none" }, async (ctx) => {
      // `denied_packets`: refusals of this allowlist counted since the server started; `recent_denied`:
      // the destinations it refused lately, the last first (netpolicy.ts).
      return { data: await egressView(app.sandboxes, app.store, await loadSandbox(app, ctx)) };
    }),
    route("PUT /v1/sandboxes/:id/egress", { ...json(egressBody), check: checkEgress }, async (ctx) => {
      const rules = (ctx.body as Static<typeof egressBody>).egress;
      const row = await loadSandbox(app, ctx);
      if (row.status === "destroyed" || row.status === "failed") {
        throw apiError("state_conflict", { action: "set egress on", status: row.status });
      }
      // In force on the host before it is stored (a running VM), else from its next resume.
      const egress = normaliseEgress(rules) ?? [];
      const updated = await setEgress(app.sandboxes, app.store, row, egress);
      return { data: { id: updated.id, egress: updated.egress } };
    }),
    route("GET /v1/sandboxes/:id/bandwidth", { auth: "user", body: "none" }, async (ctx) => ({
      data: await bandwidth(app.sandboxes, app.store, await loadSandbox(app, ctx)),
    })),
    route("POST /v1/sandboxes/:id/bandwidth/recharge", json(rechargeBody), async (ctx) => {
      const add = (ctx.body as Static<typeof rechargeBody>).add_bytes;
      return { data: await recharge(app.sandboxes, app.store, await loadSandbox(app, ctx), add) };
    }),
    route("POST /v1/sandboxes/:id/ssh-pubkeys", json(sshKeysBody), async (ctx) => {
      const keys = (ctx.body as Static<typeof sshKeysBody>).keys!;
      const row = await loadSandbox(app, ctx);
      const merged = mergeSshKeys(row.ssh_pubkeys, keys);
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
