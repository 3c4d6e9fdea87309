/**
 * AWS Signature Version 4 for S3 requests, on node:crypto. Two sides sign with it: the control plane
 * when it checks a bucket at registration, and the host daemon's disk proxy when it re-signs a guest's
 * request with the real keys (the guest only ever holds dummy ones).
 *
 * Why not a package: `aws4` is small but untyped and signs whole in-memory bodies; the proxy streams
 * bodies and signs `UNSIGNED-PAYLOAD` (what s3fs and the AWS CLI send over TLS-less local hops too), so
 * the 60 lines below are all that is needed and they are checked against AWS's published test vector.
 */
import { createHash, createHmac } from "node:crypto";

export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export interface SigV4Request {
  method: string;
  /** Path as sent on the wire: already percent-encoded per segment. */
  path: string;
  /** Raw query string without `?` (decoded and re-encoded canonically here). */
  query: string;
  /** Headers to sign, lower-case names; `host` must be among them. */
  headers: Record<string, string>;
  /** Hex SHA-256 of the body, or {@link UNSIGNED_PAYLOAD}. */
  payloadHash: string;
}

export interface SigV4Key {
  accessKey: string;
  secretKey: string;
  region: string;
  service: string;
}

const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest();
const sha256hex = (s: string) => createHash("sha256").update(s).digest("hex");

/** RFC 3986 encoding as SigV4 wants it (`encodeURIComponent` leaves `!'()*` alone). */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(q: string): string {
  if (!q) return "";
  const pairs = q
    .split("&")
    .filter(Boolean)
    .map((kv) => {
      const i = kv.indexOf("=");
      const k = i < 0 ? kv : kv.slice(0, i);
      const v = i < 0 ? "" : kv.slice(i + 1);
      const dec = (x: string) => decodeURIComponent(x.replace(/\+/g, "%20"));
      return [uriEncode(dec(k)), uriEncode(dec(v))] as const;
    });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/** `20150830T123600Z` for a date. */
export function amzDate(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

/**
 * The `Authorization` header for a request. `headers` must already carry `x-amz-date` (and, for S3,
 * `x-amz-content-sha256`); every header given is signed.
 */
export function signV4(req: SigV4Request, key: SigV4Key): string {
  const date = req.headers["x-amz-date"];
  if (!date) throw new Error("x-amz-date header is required");
  const names = Object.keys(req.headers)
    .map((h) => h.toLowerCase())
    .sort();
  const lower = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), v]));
  const canonicalHeaders = names
    .map((n) => `${n}:${String(lower[n]).trim().replace(/\s+/g, " ")}\n`)
    .join("");
  const signed = names.join(";");
  const canonical = [
    req.method.toUpperCase(),
    req.path || "/",
    canonicalQuery(req.query),
    canonicalHeaders,
    signed,
    req.payloadHash,
  ].join("\n");
  const day = date.slice(0, 8);
  const scope = `${day}/${key.region}/${key.service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", date, scope, sha256hex(canonical)].join("\n");
  const kDate = hmac(`AWS4${key.secretKey}`, day);
  const kSigning = hmac(hmac(hmac(kDate, key.region), key.service), "aws4_request");
  const sig = createHmac("sha256", kSigning).update(toSign).digest("hex");
  return `AWS4-HMAC-SHA256 Credential=${key.accessKey}/${scope}, SignedHeaders=${signed}, Signature=${sig}`;
}

/** Where a request for `key` (encoded, no leading `/`) in a bucket goes: path style or virtual-host style. */
export function bucketUrl(
  cfg: { bucket: string; endpoint: string; use_path_style?: boolean | undefined },
  key: string,
): URL {
  const u = new URL(cfg.endpoint);
  const base = u.pathname.replace(/\/+$/, "");
  // AWS itself wants virtual-host style unless told otherwise; everything else (MinIO, R2, s3rver) path.
  if (cfg.use_path_style ?? !u.hostname.endsWith(".amazonaws.com"))
    u.pathname = `${base}/${cfg.bucket}/${key}`;
  else {
    u.hostname = `${cfg.bucket}.${u.hostname}`;
    u.pathname = `${base}/${key}`;
  }
  return u;
}
