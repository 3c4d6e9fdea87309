/**
 * Disks, S3-compatible buckets (protocol.md §2.6, §2.8): every request is validated first (the checks
 * below), then served by disks/service.ts — registrations checked against the bucket, keys sealed at rest,
 * attachments mounted on the sandbox's host.
 */
import { apiError, validationError, type api as wire } from "@createos-sandbox/protocol";
import { diskView } from "../disks/service.js";
import type { Ctx, Route } from "../http/server.js";
import type { SandboxRow } from "../store/types.js";
import { Fields, RESOURCE_NAME_RE, absolutePathError, pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, loadSandbox, paged, requireRunning, route, userOf } from "./common.js";
import { checkDiskAttachment } from "./sandboxes.js";

export function diskRoutes(app: App): Route[] {
  return [
    route("GET /v1/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const res = app.disks.store.list(userOf(ctx), limit, offset);
      return { data: page(res.rows.map(diskView), res.total, limit, offset) };
    }),
    route("POST /v1/disks", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      f.str("name", {
        required: true,
        max: 63,
        re: RESOURCE_NAME_RE,
        reMsg: "name must match ^[a-z0-9][a-z0-9-]{0,62}$",
      });
      const kind = f.str("kind", { required: true });
      if (kind && kind !== "s3") f.fail("kind", `unknown kind: ${kind.slice(0, 50)} (only s3)`);
      checkS3(f);
      f.done();
      const d = await app.disks.create(userOf(ctx), ctx.body as wire.DiskCreateRequest);
      return { data: diskView(d) };
    }),
    route("GET /v1/disks/:ref", { auth: "user", body: "none" }, async (ctx) => ({
      data: diskView(app.disks.find(userOf(ctx), ctx.params.ref!)),
    })),
    route("PATCH /v1/disks/:ref", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      checkCredentials(f);
      f.done();
      const d = app.disks.find(userOf(ctx), ctx.params.ref!);
      await app.disks.rotate(d, (ctx.body as wire.DiskUpdateRequest).credentials, liveDaemons(app));
      return { data: diskView(d) };
    }),
    route("DELETE /v1/disks/:ref", { auth: "user", body: "none" }, async (ctx) => {
      app.disks.delete(app.disks.find(userOf(ctx), ctx.params.ref!));
      return { data: { deleted: true } };
    }),
    route("GET /v1/sandboxes/:id/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const row = await loadSandbox(app, ctx);
      if (row.status === "running") await app.disks.refresh(row, app.sandboxes.daemonFor(row));
      const all = app.disks.views(row.id);
      return { data: page(all.slice(offset, offset + limit), all.length, limit, offset) };
    }),
    route("POST /v1/sandboxes/:id/disks", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      checkDiskAttachment(f, f.raw, "disk");
      f.done();
      const row = await loadSandbox(app, ctx);
      const [a] = app.disks.resolve(userOf(ctx), [ctx.body as wire.DiskAttachment]);
      requireRunning(row, "attach a disk to");
      await app.disks.attach(row, a!, app.sandboxes.daemonFor(row));
      return { data: { ok: true } };
    }),
    route("DELETE /v1/sandboxes/:id/disks/:disk", { auth: "user", body: "none" }, async (ctx) => {
      const err = absolutePathError(ctx.query.mount_path ?? null, "mount_path");
      if (err) throw validationError(err);
      const row = await loadSandbox(app, ctx);
      return { data: { detached: await detach(app, ctx, row) } };
    }),
  ];
}

/**
 * `CreateSandboxRequest.disks`, once the VM runs: each is mounted before the create answers, so the
 * caller's first command sees it (a mount that fails is kept with its mount_error, as listDisks shows).
 */
export async function mountAtBoot(app: App, row: SandboxRow, body: unknown): Promise<void> {
  const list = (body as { disks?: wire.DiskAttachment[] | null }).disks;
  if (!list?.length || row.status !== "running") return;
  const daemon = app.sandboxes.daemonFor(row);
  for (const a of app.disks.resolve(row.user_id, list)) await app.disks.attach(row, a, daemon);
}

/** Every attached host daemon: a rotation reaches the live mounts wherever they are. */
function liveDaemons(app: App) {
  return app.hosts.all().flatMap((h) => (h.daemon ? [h.daemon] : []));
}

/** Detach by `disk_…` id (as the seed says: names are not resolved here) and mount path. */
async function detach(app: App, ctx: Ctx, row: SandboxRow): Promise<boolean> {
  const diskId = ctx.params.disk!;
  const path = ctx.query.mount_path!;
  const running = row.status === "running";
  // A paused guest still has the mount in its memory: it is unmounted (flushed) only while it runs.
  if (!running && row.status !== "destroyed" && row.status !== "failed")
    throw apiError("state_conflict", { action: "detach a disk from", status: row.status });
  const ok = await app.disks.detach(row, diskId, path, running ? app.sandboxes.daemonFor(row) : undefined);
  if (!ok) throw apiError("disk_not_attached", { id: diskId.slice(0, 100), path: path.slice(0, 200) });
  return ok;
}

function checkCredentials(f: Fields): void {
  const c = f.raw.credentials;
  if (typeof c !== "object" || c === null || Array.isArray(c)) {
    f.fail("credentials", "credentials {access_key, secret_key} are required");
    return;
  }
  const { access_key, secret_key } = c as Record<string, unknown>;
  if (typeof access_key !== "string" || !access_key)
    f.fail("credentials.access_key", "access_key is required");
  if (typeof secret_key !== "string" || !secret_key)
    f.fail("credentials.secret_key", "secret_key is required");
}

function checkS3(f: Fields): void {
  const c = f.raw.config;
  if (typeof c !== "object" || c === null || Array.isArray(c))
    f.fail("config", "config {bucket, endpoint} is required");
  else {
    const { bucket, endpoint, region, use_path_style } = c as Record<string, unknown>;
    if (typeof bucket !== "string" || !/^[a-z0-9][a-z0-9.-]{1,62}$/.test(bucket)) {
      f.fail("config.bucket", "bucket must be a valid S3 bucket name");
    }
    let okUrl = false;
    try {
      okUrl = typeof endpoint === "string" && /^https?:$/.test(new URL(endpoint).protocol);
    } catch {
      okUrl = false;
    }
    if (!okUrl) f.fail("config.endpoint", "endpoint must be an http(s) URL");
    if (region !== undefined && typeof region !== "string")
      f.fail("config.region", "region must be a string");
    if (use_path_style !== undefined && typeof use_path_style !== "boolean") {
      f.fail("config.use_path_style", "use_path_style must be true or false");
    }
  }
  checkCredentials(f);
}
