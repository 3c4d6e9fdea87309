/**
 * The disk proxy: a plain-HTTP S3 endpoint the host daemon serves its guests. A guest's FUSE client
 * (s3fs) signs with dummy keys; the proxy finds the sandbox by the connection's source address, checks
 * the request is inside one of that sandbox's mounts (scope.ts), throws the guest's signature away,
 * signs again with the disk's real keys (SigV4, UNSIGNED-PAYLOAD or the guest's own body hash) and
 * forwards it from the host to the real endpoint. Bodies stream both ways: nothing is buffered, so an
 * object of any size costs a socket buffer, and a slow side slows the other (pipe backpressure).
 *
 * The keys live only in this process's memory (from mountDisk / setDiskCredentials); a rotation is in
 * force for the next request.
 *
 * The endpoint is the tenant's word, and the proxy connects from the host: it connects only where the
 * guest itself may (protocol/outbound.ts — public addresses and the operator's private-egress list, never
 * this machine's or the address plan's), checked on the address of each connection so that a name
 * repointed after registration is caught; and it forwards only the headers S3 defines, so a guest cannot
 * add the ones a metadata or admin service would obey.
 */
import {
  type IncomingMessage,
  type Server,
  type ServerResponse,
  createServer,
  request as httpRequest,
} from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import {
  OutboundRefused,
  type OutboundRules,
  guardedLookup,
  refuseLiteral,
} from "@createos-sandbox/protocol/outbound";
import { UNSIGNED_PAYLOAD, amzDate, bucketUrl, signV4, uriEncode } from "@createos-sandbox/protocol/sigv4";
import { type Grant, copySource, scope } from "./scope.js";

export interface DiskTarget {
  bucket: string;
  endpoint: string;
  region?: string | undefined;
  use_path_style?: boolean | undefined;
  access_key: string;
  secret_key: string;
}

export interface ProxyLog {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface ProxyDeps {
  /** The grants of the sandbox a connection comes from (by its source address), or undefined. */
  grantsOf(remoteAddress: string): Map<string, Grant> | undefined;
  target(diskId: string): DiskTarget | undefined;
  /** What the endpoint said to a mount's request: a failure that is the disk's, not the object's, or none. */
  outcome?(grant: Grant, failure: string | undefined): void;
  /** Where the endpoint may be (read at each request). */
  rules(): OutboundRules;
  log: ProxyLog;
}

/**
 * What an answer says of the mount: its own failure (keys refused, bucket gone), null when it is healthy,
 * or undefined when it says nothing of the disk. An object's 404 is the last kind unless its S3 error code
 * (`code`, from the body) is NoSuchBucket: a HEAD's 404 has no body to tell a missing key from a missing
 * bucket, and must not clear the failure a list or a write found a moment before.
 */
export function mountVerdict(
  status: number,
  bucketLevel: boolean,
  t: DiskTarget,
  code?: string,
): string | null | undefined {
  if (status === 401 || status === 403) return `the endpoint refused the disk's credentials (HTTP ${status})`;
  if (status === 404 && (bucketLevel || code === "NoSuchBucket"))
    return `no bucket ${t.bucket} at ${t.endpoint}`;
  if (status === 404 || (status >= 300 && status < 400)) return undefined;
  return null;
}

/** The request headers S3 reads besides `x-amz-*` (RFC 9110 entity and conditional headers). */
const FORWARD = new Set([
  "content-type",
  "content-length",
  "content-md5",
  "content-encoding",
  "content-language",
  "content-disposition",
  "cache-control",
  "expires",
  "range",
  "if-match",
  "if-none-match",
  "if-modified-since",
  "if-unmodified-since",
  "transfer-encoding",
]);
/** The `x-amz-*` headers the re-signing replaces. */
const RESIGNED = new Set(["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"]);
const forwarded = (k: string) => FORWARD.has(k) || (k.startsWith("x-amz-") && !RESIGNED.has(k));
const HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "trailer",
]);

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message.replace(/[<&>]/g, "")}</Message></Error>`;
  if (!res.headersSent)
    res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export class DiskProxy {
  private readonly server: Server;

  constructor(private readonly deps: ProxyDeps) {
    this.server = createServer((req, res) => {
      // One connection per request: a guest paused with an idle keep-alive connection would wake up in a
      // namespace that knows nothing of it and wait out its client's timeout; a local handshake is cheap.
      res.shouldKeepAlive = false;
      this.handle(req, res);
    });
  }

  listen(host: string, port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const grants = this.deps.grantsOf(req.socket.remoteAddress ?? "");
    if (!grants) {
      s3Error(res, 403, "AccessDenied", "no disks are mounted in this sandbox");
      return;
    }
    const url = new URL(req.url ?? "/", "http://proxy");
    const method = req.method ?? "GET";
    const s = scope(method, url.pathname, url.searchParams, grants);
    if (!s.ok) {
      s3Error(res, 403, "AccessDenied", s.reason);
      return;
    }
    const t = this.deps.target(s.grant.disk_id);
    if (!t) {
      s3Error(res, 403, "AccessDenied", "the disk is not mounted here");
      return;
    }
    const guestHash = String(req.headers["x-amz-content-sha256"] ?? UNSIGNED_PAYLOAD);
    // A chunk-signed body (STREAMING-…) carries signatures made with the dummy keys: it cannot be re-signed.
    if (guestHash !== UNSIGNED_PAYLOAD && !/^[0-9a-f]{64}$/.test(guestHash)) {
      s3Error(res, 501, "NotImplemented", "chunk-signed payloads are not supported; use UNSIGNED-PAYLOAD");
      return;
    }

    const out = bucketUrl(t, s.key.split("/").map(uriEncode).join("/"));
    if (s.prefix !== undefined) url.searchParams.set("prefix", s.prefix);
    out.search = url.searchParams.size ? `?${url.searchParams.toString().replace(/\+/g, "%20")}` : "";
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v === undefined || !forwarded(k)) continue;
      headers[k] = Array.isArray(v) ? v.join(",") : v;
    }
    const copy = req.headers["x-amz-copy-source"];
    if (typeof copy === "string") {
      const c = copySource(copy, grants, s.grant);
      if (!c.ok) {
        s3Error(res, 403, "AccessDenied", c.reason);
        return;
      }
      headers["x-amz-copy-source"] = `/${t.bucket}/${c.key.split("/").map(uriEncode).join("/")}${c.suffix}`;
    }
    headers.host = out.host;
    headers["x-amz-date"] = amzDate(new Date());
    headers["x-amz-content-sha256"] = guestHash;
    const signed: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers))
      if (k === "host" || k.startsWith("x-amz-") || k === "content-type" || k === "content-md5")
        signed[k] = v;
    headers.authorization = signV4(
      { method, path: out.pathname, query: out.search.slice(1), headers: signed, payloadHash: guestHash },
      { accessKey: t.access_key, secretKey: t.secret_key, region: t.region || "us-east-1", service: "s3" },
    );

    const rules = this.deps.rules();
    const literal = refuseLiteral(out.hostname, rules);
    if (literal) {
      this.refused(res, s.grant, literal);
      return;
    }
    const lookup = guardedLookup(rules);
    const up = (out.protocol === "https:" ? httpsRequest : httpRequest)(
      out,
      { method, headers, lookup },
      (ur) => {
        const h: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(ur.headers)) if (v !== undefined && !HOP.has(k)) h[k] = v;
        const status = ur.statusCode ?? 502;
        const report = (v: string | null | undefined) =>
          v !== undefined && this.deps.outcome?.(s.grant, v ?? undefined);
        report(mountVerdict(status, s.key === "", t));
        // S3 names the error in the body's first bytes; the pipe below still gets every chunk.
        if (status === 404 && s.key !== "")
          ur.once("data", (c: Buffer) =>
            report(mountVerdict(status, false, t, /<Code>([^<]+)<\/Code>/.exec(c.toString("utf8"))?.[1])),
          );
        res.writeHead(status, h);
        ur.pipe(res);
        ur.once("error", () => res.destroy());
      },
    );
    up.once("error", (e) => {
      if (e instanceof OutboundRefused) return this.refused(res, s.grant, e);
      this.deps.log.warn("disk proxy upstream failed", { disk_id: s.grant.disk_id, err: String(e) });
      this.deps.outcome?.(
        s.grant,
        `the endpoint is unreachable from the host: ${(e as NodeJS.ErrnoException).code ?? e.message}`,
      );
      if (res.headersSent) res.destroy();
      else s3Error(res, 502, "BadGateway", "the disk's endpoint is unreachable from the host");
    });
    res.once("close", () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /** The endpoint is somewhere the guest may not reach: nothing was sent; the mount says why. */
  private refused(res: ServerResponse, grant: Grant, e: OutboundRefused): void {
    const why = `the endpoint ${e.host} is at ${e.address}, ${e.reason}, which the host does not connect to for a guest (CREATEOS_SANDBOX_PRIVATE_EGRESS lists the private ranges it may)`;
    this.deps.log.warn("disk proxy refused an endpoint", { disk_id: grant.disk_id, address: e.address });
    this.deps.outcome?.(grant, why);
    if (res.headersSent) res.destroy();
    else s3Error(res, 403, "AccessDenied", why);
  }
}
