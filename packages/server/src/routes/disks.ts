/**
 * Disks, S3-compatible buckets (protocol.md §2.6, §2.8): every request is validated as the real API
 * will, then refused with `disks_not_configured` until the disks issue lands.
 */
import { apiError, validationError } from "@createos-sandbox/protocol";
import type { Route } from "../http/server.js";
import { Fields, RESOURCE_NAME_RE, absolutePathError, pageParams } from "../validate.js";
import { page } from "../views.js";
import { type App, loadSandbox, paged, route } from "./common.js";
import { checkDiskAttachment } from "./sandboxes.js";

const notConfigured = async (): Promise<never> => {
  throw apiError("disks_not_configured");
};

export function diskRoutes(app: App): Route[] {
  return [
    route("GET /v1/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      pageParams(ctx.query);
      throw apiError("disks_not_configured");
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
      throw apiError("disks_not_configured");
    }),
    route("GET /v1/disks/:ref", { auth: "user", body: "none" }, notConfigured),
    route("PATCH /v1/disks/:ref", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      checkCredentials(f);
      f.done();
      throw apiError("disks_not_configured");
    }),
    route("DELETE /v1/disks/:ref", { auth: "user", body: "none" }, notConfigured),
    route("GET /v1/sandboxes/:id/disks", { auth: "user", body: "none", schema: paged }, async (ctx) => {
      const { limit, offset } = pageParams(ctx.query);
      await loadSandbox(app, ctx);
      // No disk can be attached before the disks issue: the true answer is an empty page.
      return { data: page([], 0, limit, offset) };
    }),
    route("POST /v1/sandboxes/:id/disks", { auth: "user", body: "json" }, async (ctx) => {
      const f = new Fields(ctx.body);
      checkDiskAttachment(f, f.raw, "disk");
      f.done();
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
