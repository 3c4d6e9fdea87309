/**
 * Disks, S3-compatible buckets (protocol.md §2.6, §2.8): every request is validated first (the schemas
 * below), then served by disks/service.ts — registrations checked against the bucket, keys sealed at rest,
 * attachments mounted on the sandbox's host.
 */
import { apiError, validationError, type api as wire } from "@createos-sandbox/protocol";
import { type TObject, Type } from "@sinclair/typebox";
import { type AttachInput, type DiskHost, diskView } from "../disks/service.js";
import { publicHostId } from "../hosterr.js";
import { isUp } from "../hosts.js";
import type { Ctx, Route } from "../http/server.js";
import { str } from "../schema.js";
import type { AttachmentRow } from "../store/disks.js";
import type { SandboxRow } from "../store/types.js";
import { absolutePathError, pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, loadSandbox, paged, requireRunning, route, userOf } from "./common.js";
import { resourceName } from "./networks.js";
import { diskAttachment } from "./sandbox-bodies.js";

const CREDENTIALS = "credentials {access_key, secret_key} are required";
const Credentials = Type.Object(
  {
    access_key: str("access_key", { required: true, msg: "access_key is required" }),
    secret_key: str("secret_key", { required: true, msg: "secret_key is required" }),
  },
  // `default: null` (refused by the type): a missing one is reported in its place (schema.ts).
  { "x-msg": { type: CREDENTIALS, present: CREDENTIALS }, default: null },
);
const S3_CONFIG = "config {bucket, endpoint} is required";
const S3Config = Type.Object(
  {
    bucket: str("bucket", {
      required: true,
      re: /^[a-z0-9][a-z0-9.-]{1,62}$/,
      msg: "bucket must be a valid S3 bucket name",
    }),
    endpoint: Type.Unsafe<string>({
      type: "string",
      grammar: "httpUrl",
      "x-msg": "endpoint must be an http(s) URL",
      default: null,
    }),
    region: Type.Optional(Type.String({ "x-msg": "region must be a string" })),
    use_path_style: Type.Optional(Type.Boolean({ "x-msg": "use_path_style must be true or false" })),
  },
  { "x-msg": { type: S3_CONFIG, present: S3_CONFIG }, default: null },
);
const KIND = str("kind", { required: true });
const CreateBody = Type.Object({
  name: resourceName(),
  kind: KIND,
  config: S3Config,
  credentials: Credentials,
});
const PatchBody = Type.Object({ credentials: Credentials });
const AttachBody = Type.Object(diskAttachment("disk"));
const json = (body: TObject) => ({ auth: "user", body: "json", schema: { body } }) as const;

/** One kind so far; the message names the kind asked for, which a schema's message cannot. */
function checkKind(ctx: Ctx, errs: Record<string, string>): void {
  const { kind } = ctx.body as { kind?: string };
  if (!errs.kind && kind !== "s3") errs.kind = `unknown kind: ${kind!.slice(0, 50)} (only s3)`;
}

export function diskRoutes(app: App): Route[] {
  return [
    route("GET /v1/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      const res = app.disks.store.list(userOf(ctx), limit, offset);
      return { data: page(res.rows.map(diskView), res.total, limit, offset) };
    }),
    route("POST /v1/disks", { ...json(CreateBody), check: checkKind }, async (ctx) => {
      const d = await app.disks.create(userOf(ctx), ctx.body as wire.DiskCreateRequest);
      return { data: diskView(d) };
    }),
    route("GET /v1/disks/:ref", { auth: "user", body: "none" }, async (ctx) => ({
      data: diskView(app.disks.find(userOf(ctx), ctx.params.ref!)),
    })),
    route("PATCH /v1/disks/:ref", json(PatchBody), async (ctx) => {
      const d = app.disks.find(userOf(ctx), ctx.params.ref!);
      await app.disks.rotate(d, (ctx.body as wire.DiskUpdateRequest).credentials, liveHosts(app));
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
    route("POST /v1/sandboxes/:id/disks", json(AttachBody), async (ctx) => {
      const row = await loadSandbox(app, ctx);
      const [a] = app.disks.resolve(userOf(ctx), [ctx.body as wire.DiskAttachment], "disk");
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
 * `CreateSandboxRequest.disks`, resolved and checked before any VM exists (an unknown disk or a refused
 * mount path is answered before anything is made): what mountAtBoot mounts once the VM runs.
 */
export function bootDisks(app: App, ctx: Ctx): AttachmentRow[] {
  const list = (ctx.body as { disks?: AttachInput[] | null }).disks;
  return list?.length ? app.disks.resolve(ctx.principal!.user_id, list, "disks") : [];
}

/**
 * The create's disks, once the VM runs: each is mounted before the create answers, so the caller's first
 * command sees it. Nothing here fails the create (the sandbox exists and counts against the limits): a
 * disk that cannot be mounted, its host gone or the disk deleted while the VM booted, keeps why in its
 * mount_error, as listDisks shows.
 */
export async function mountAtBoot(app: App, row: SandboxRow, disks: AttachmentRow[]): Promise<void> {
  if (!disks.length || row.status !== "running") return;
  await app.disks.attachAtBoot(row, disks, () => app.sandboxes.daemonFor(row));
}

/** The hosts up now: a rotation reaches their live mounts; one down gets the keys when it is back. */
function liveHosts(app: App): DiskHost[] {
  return app.hosts
    .all()
    .flatMap((h, i) => (isUp(h) ? [{ name: publicHostId(h.id, i), daemon: h.daemon }] : []));
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
