/**
 * Disks, S3-compatible buckets (protocol.md §2.6, §2.8): every request is validated as the real API
 * will, then refused with `disks_not_configured` until the disks issue lands.
 */
import { apiError, validationError } from "@createos-sandbox/protocol";
import { type TObject, Type } from "@sinclair/typebox";
import type { Ctx, Route } from "../http/server.js";
import { str } from "../schema.js";
import { absolutePathError, pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, loadSandbox, paged, route } from "./common.js";
import { resourceName } from "./networks.js";
import { diskAttachment } from "./sandbox-bodies.js";

const CREDENTIALS = "credentials {access_key, secret_key} are required";
const Credentials = Type.Object(
  {
    access_key: str("access_key", { required: true, msg: "access_key is required" }),
    secret_key: str("secret_key", { required: true, msg: "secret_key is required" }),
  },
  { "x-msg": { type: CREDENTIALS, present: CREDENTIALS } },
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
    }),
    region: Type.Optional(Type.String({ "x-msg": "region must be a string" })),
    use_path_style: Type.Optional(Type.Boolean({ "x-msg": "use_path_style must be true or false" })),
  },
  { "x-msg": { type: S3_CONFIG, present: S3_CONFIG } },
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

const notConfigured = async (): Promise<never> => {
  throw apiError("disks_not_configured");
};

/** One kind so far; the message names the kind asked for, which a schema's message cannot. */
function checkKind(ctx: Ctx, errs: Record<string, string>): void {
  const { kind } = ctx.body as { kind?: string };
  if (!errs.kind && kind !== "s3") errs.kind = `unknown kind: ${kind!.slice(0, 50)} (only s3)`;
}

export function diskRoutes(app: App): Route[] {
  return [
    route("GET /v1/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      pageParams(ctx.query);
      throw apiError("disks_not_configured");
    }),
    route("POST /v1/disks", { ...json(CreateBody), check: checkKind }, async () => {
      throw apiError("disks_not_configured");
    }),
    route("GET /v1/disks/:ref", { auth: "user", body: "none" }, notConfigured),
    route("PATCH /v1/disks/:ref", json(PatchBody), notConfigured),
    route("DELETE /v1/disks/:ref", { auth: "user", body: "none" }, notConfigured),
    route("GET /v1/sandboxes/:id/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      await loadSandbox(app, ctx);
      // No disk can be attached before the disks issue: the true answer is an empty page.
      return { data: page([], 0, limit, offset) };
    }),
    route("POST /v1/sandboxes/:id/disks", json(AttachBody), async (ctx) => {
      await loadSandbox(app, ctx);
      throw apiError("disks_not_configured");
    }),
    route("DELETE /v1/sandboxes/:id/disks/:disk", { auth: "user", body: "none" }, async (ctx) => {
      const err = absolutePathError(ctx.query.mount_path ?? null, "mount_path");
      if (err) throw validationError(err);
      await loadSandbox(app, ctx);
      throw apiError("disks_not_configured");
    }),
  ];
}
