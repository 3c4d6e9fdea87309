/**
 * Which requests a guest's S3 client may make through its disk proxy. The guest addresses each mount by
 * an alias bucket (path style: `/<alias>/<key>`); a request passes only when the alias is one of this
 * sandbox's mounts, its key (or listing prefix) lies inside the mount's `sub_path`, and it is an object
 * operation or a listing — never a bucket-level change (policy, ACL, lifecycle, delete of the bucket) and
 * never a multi-object delete, whose keys are in a body the proxy does not read.
 */
import { createHash } from "node:crypto";

export interface Grant {
  disk_id: string;
  mount_path: string;
  sub_path?: string;
}

export type Scoped =
  | {
      ok: true;
      alias: string;
      grant: Grant;
      key: string /** Replaces the listing's prefix. */;
      prefix?: string;
    }
  | { ok: false; reason: string };

/** The alias bucket name of a mount: stable per (disk, path), a valid bucket name, no secret in it. */
export function aliasOf(diskId: string, mountPath: string): string {
  return `csb-${createHash("sha256").update(`${diskId}\0${mountPath}`).digest("hex").slice(0, 20)}`;
}

/** Bucket-level sub-resources a mount may read (a listing and the questions s3fs asks at start). */
const BUCKET_READS = new Set([
  "list-type",
  "prefix",
  "delimiter",
  "max-keys",
  "marker",
  "continuation-token",
  "start-after",
  "encoding-type",
  "fetch-owner",
  "location",
]);
/** Object-level sub-resources: multipart uploads and the like; anything else on an object is refused. */
const OBJECT_PARAMS = new Set(["uploads", "uploadId", "partNumber", "versionId", "x-id"]);

const inside = (key: string, sub: string | undefined) => !sub || key === sub || key.startsWith(`${sub}/`);

export function scope(
  method: string,
  rawPath: string,
  query: URLSearchParams,
  grants: Map<string, Grant>,
): Scoped {
  const m = /^\/([^/?]+)(?:\/(.*))?$/.exec(rawPath);
  if (!m) return { ok: false, reason: "path-style /<bucket>/<key> only" };
  const alias = m[1]!;
  const grant = grants.get(alias);
  if (!grant) return { ok: false, reason: "no such mount" };
  let key: string;
  try {
    key = (m[2] ?? "").split("/").map(decodeURIComponent).join("/");
  } catch {
    return { ok: false, reason: "bad key encoding" };
  }
  if (key.split("/").some((s) => s === "." || s === ".."))
    return { ok: false, reason: "dot segments in the key" };
  const sub = grant.sub_path;
  if (key === "") {
    if (method !== "GET" && method !== "HEAD") return { ok: false, reason: `${method} on the bucket` };
    for (const k of query.keys()) if (!BUCKET_READS.has(k)) return { ok: false, reason: `bucket ?${k}` };
    if (sub && method === "GET" && !query.has("location")) {
      // s3fs checks a sub_path mount with a bare listing of the bucket: it gets the sub_path's instead.
      if (!query.has("prefix")) return { ok: true, alias, grant, key, prefix: `${sub}/` };
      // `sub` itself without the slash would also list `sub-other/…`: only `sub/…` prefixes.
      if (!(query.get("prefix") ?? "").startsWith(`${sub}/`))
        return { ok: false, reason: "listing outside the mount's sub_path" };
    }
    return { ok: true, alias, grant, key };
  }
  for (const k of query.keys()) if (!OBJECT_PARAMS.has(k)) return { ok: false, reason: `object ?${k}` };
  if (!["GET", "HEAD", "PUT", "POST", "DELETE"].includes(method)) return { ok: false, reason: `${method}` };
  if (method === "POST" && !query.has("uploads") && !query.has("uploadId"))
    return { ok: false, reason: "POST other than a multipart upload" };
  if (!inside(key.replace(/\/$/, ""), sub)) return { ok: false, reason: "key outside the mount's sub_path" };
  return { ok: true, alias, grant, key };
}

/**
 * `x-amz-copy-source` (rename, server-side copy) names the source by alias too: it must be a mount of the
 * same sandbox on the same disk (a copy never leaves the bucket), with the key inside that mount's
 * sub_path. Returns the source key in the real bucket (and its `?versionId=…`, if any).
 */
export function copySource(
  header: string,
  grants: Map<string, Grant>,
  dest: Grant,
): { ok: true; key: string; suffix: string } | { ok: false; reason: string } {
  const q = header.indexOf("?");
  const suffix = q < 0 ? "" : header.slice(q);
  let path: string;
  try {
    path = decodeURIComponent(q < 0 ? header : header.slice(0, q)).replace(/^\/+/, "");
  } catch {
    return { ok: false, reason: "bad copy source encoding" };
  }
  const slash = path.indexOf("/");
  const src = slash < 0 ? undefined : grants.get(path.slice(0, slash));
  if (!src || src.disk_id !== dest.disk_id)
    return { ok: false, reason: "copy source is not a mount of this disk" };
  const key = path.slice(slash + 1);
  if (key.split("/").some((s) => s === "." || s === ".."))
    return { ok: false, reason: "dot segments in the copy source" };
  if (!inside(key.replace(/\/$/, ""), src.sub_path))
    return { ok: false, reason: "copy source outside its mount's sub_path" };
  return { ok: true, key, suffix };
}
