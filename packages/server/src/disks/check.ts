/**
 * The registration check: one signed `ListObjectsV2 max-keys=1` on the bucket with the keys given, so a
 * typo fails at `POST /v1/disks` with its reason (name lookup, connect, credentials, bucket) instead of
 * later as a mount error. The control plane runs it from its own host, like the disk proxy that forwards
 * the guests' requests; so, like the proxy, it connects only where a guest's own traffic may go
 * (protocol/outbound.ts): no loopback, metadata service or unlisted private address, refused before any
 * packet is sent, so the check cannot probe the operator's network either.
 */
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { type ApiError, apiError, type api as wire } from "@createos-sandbox/protocol";
import {
  OutboundRefused,
  type OutboundRules,
  guardedLookup,
  refuseLiteral,
} from "@createos-sandbox/protocol/outbound";
import { EMPTY_SHA256, amzDate, bucketUrl, signV4 } from "@createos-sandbox/protocol/sigv4";
import { privateEgress } from "../egress.js";

const CHECK_TIMEOUT_MS = 10_000;
const DNS_CODES = new Set(["ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NONAME", "EAI_NODATA"]);

interface Reply {
  status: number;
  body: string;
}

function get(url: URL, headers: Record<string, string>, rules: OutboundRules): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const literal = refuseLiteral(url.hostname, rules);
    if (literal) return reject(literal);
    const req = (url.protocol === "https:" ? httpsRequest : httpRequest)(
      url,
      { method: "GET", headers, timeout: CHECK_TIMEOUT_MS, lookup: guardedLookup(rules) },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          if (body.length < 4096) body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
    req.on("error", reject);
    req.end();
  });
}

const xmlCode = (body: string) => /<Code>([^<]{1,64})<\/Code>/.exec(body)?.[1];

/** Resolves when the bucket answers a listing with these keys; else the catalog error that says why. */
export async function checkBucket(
  cfg: wire.DiskConfig,
  creds: wire.DiskCredentials,
  rules: OutboundRules = { privateEgress: privateEgress() },
): Promise<void> {
  const url = bucketUrl(cfg, "");
  url.search = "list-type=2&max-keys=1";
  const headers: Record<string, string> = {
    host: url.host,
    "x-amz-date": amzDate(new Date()),
    "x-amz-content-sha256": EMPTY_SHA256,
  };
  headers.authorization = signV4(
    { method: "GET", path: url.pathname, query: url.search.slice(1), headers, payloadHash: EMPTY_SHA256 },
    {
      accessKey: creds.access_key,
      secretKey: creds.secret_key,
      region: cfg.region || "us-east-1",
      service: "s3",
    },
  );
  let r: Reply;
  try {
    r = await get(url, headers, rules);
  } catch (e) {
    throw networkError(e, url, cfg.endpoint);
  }
  if (r.status >= 200 && r.status < 300) return;
  const code = xmlCode(r.body);
  if (r.status === 404 || code === "NoSuchBucket")
    throw apiError("disk_bucket_missing", { bucket: cfg.bucket, endpoint: cfg.endpoint });
  if (r.status === 401 || r.status === 403)
    throw apiError("disk_auth_failed", { bucket: cfg.bucket, detail: code ?? `HTTP ${r.status}` });
  throw apiError("disk_check_failed", { status: r.status, detail: code ?? "" });
}

function networkError(e: unknown, url: URL, endpoint: string): ApiError {
  if (e instanceof OutboundRefused)
    return apiError("disk_endpoint_refused", { host: url.hostname, address: e.address, reason: e.reason });
  const code = (e as NodeJS.ErrnoException).code ?? "";
  if (DNS_CODES.has(code)) return apiError("disk_endpoint_unresolved", { host: url.hostname, detail: code });
  return apiError("disk_endpoint_unreachable", {
    endpoint,
    detail: code || (e instanceof Error ? e.message : String(e)),
  });
}
