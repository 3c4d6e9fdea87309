/**
 * Test helpers: an s3rver (a real S3 implementation from npm) on a given address, and a signed request
 * to it, for the disk proxy's tests on loopback and the VM tests on a test host in a namespace.
 *
 * s3rver checks a V4 request's access key but not its signature, so it sits behind a front that does:
 * the signature is recomputed with the test's secret key (the signer is checked against AWS's published
 * vectors, sigv4.test.ts) and a mismatch is S3's 403 SignatureDoesNotMatch. Then the request goes on to
 * s3rver with the one access key s3rver knows.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { type IncomingMessage, createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { EMPTY_SHA256, UNSIGNED_PAYLOAD, amzDate, signV4 } from "@createos-sandbox/protocol/sigv4";
// @ts-ignore s3rver ships no types
import S3rver from "s3rver";

/** The test account: distinctive strings, so a search for them means something. */
export const S3_KEYS = { access_key: "AKIATESTDISK0001", secret_key: "tEsT/sEcReT+kEy0123456789abcdefGHIJ" };

export interface TestS3 {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

export async function startS3(address: string, buckets: string[], port = 0, keys = S3_KEYS): Promise<TestS3> {
  const dir = mkdtempSync(join(tmpdir(), "s3rver-"));
  const s = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    vhostBuckets: false,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const inner = ((await s.run()) as { port: number }).port;
  const front = createServer((req, res) => {
    const why = badSignature(req, keys);
    if (why) {
      res.writeHead(403, { "content-type": "application/xml" });
      res.end(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${why}</Code><Message>${why}</Message></Error>`,
      );
      return;
    }
    const headers = { ...req.headers, authorization: S3RVER_AUTH };
    const up = request(
      { host: "127.0.0.1", port: inner, method: req.method, path: req.url, headers },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => front.listen(port, address, r));
  const bound = (front.address() as AddressInfo).port;
  return {
    endpoint: `http://${address}:${bound}`,
    port: bound,
    close: async () => {
      front.closeAllConnections();
      await new Promise((r) => front.close(r));
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What s3rver is told: its own access key (it does not check V4 signatures). */
const S3RVER_AUTH =
  "AWS4-HMAC-SHA256 Credential=S3RVER/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

/** The S3 error code for a request not signed with `keys`, or undefined when it is. */
function badSignature(req: IncomingMessage, keys: typeof S3_KEYS): string | undefined {
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]+)$/.exec(
      String(req.headers.authorization ?? ""),
    );
  if (!m) return "AccessDenied";
  if (m[1] !== keys.access_key) return "InvalidAccessKeyId";
  const url = new URL(req.url ?? "/", "http://x");
  const headers: Record<string, string> = {};
  for (const h of m[5]!.split(";")) headers[h] = String(req.headers[h] ?? "");
  const want = signV4(
    {
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.search.slice(1),
      headers,
      payloadHash: headers["x-amz-content-sha256"] ?? UNSIGNED_PAYLOAD,
    },
    { accessKey: keys.access_key, secretKey: keys.secret_key, region: m[3]!, service: m[4]! },
  );
  return want.endsWith(`Signature=${m[6]}`) ? undefined : "SignatureDoesNotMatch";
}

export interface Reply {
  status: number;
  body: Buffer;
  res: IncomingMessage;
}

/** A request to `base` + path; signed with `keys` when given, with any Authorization header otherwise. */
export function s3Call(
  base: string,
  method: string,
  path: string,
  opts: { body?: Buffer | Readable; keys?: typeof S3_KEYS; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const url = new URL(path, base);
  const headers: Record<string, string> = {
    host: url.host,
    "x-amz-date": amzDate(new Date()),
    "x-amz-content-sha256": opts.body ? UNSIGNED_PAYLOAD : EMPTY_SHA256,
    ...opts.headers,
  };
  if (Buffer.isBuffer(opts.body)) headers["content-length"] = String(opts.body.length);
  headers.authorization = opts.keys
    ? signV4(
        {
          method,
          path: url.pathname,
          query: url.search.slice(1),
          headers: {
            host: headers.host!,
            "x-amz-date": headers["x-amz-date"]!,
            "x-amz-content-sha256": headers["x-amz-content-sha256"]!,
          },
          payloadHash: headers["x-amz-content-sha256"]!,
        },
        {
          accessKey: opts.keys.access_key,
          secretKey: opts.keys.secret_key,
          region: "us-east-1",
          service: "s3",
        },
      )
    : "AWS4-HMAC-SHA256 Credential=dummy/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), res }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (opts.body instanceof Readable) opts.body.pipe(req);
    else req.end(opts.body);
  });
}
