import assert from "node:assert/strict";
import { type IncomingHttpHeaders, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import type { OutboundRules } from "@createos-sandbox/protocol/outbound";
import { DiskProxy, type DiskTarget } from "./proxy.js";
import { S3_KEYS, type TestS3, s3Call, startS3 } from "./s3test.js";
import { type Grant, aliasOf } from "./scope.js";

let s3: TestS3;
let proxy: DiskProxy;
let base: string;
const target: DiskTarget = { bucket: "data", endpoint: "", ...S3_KEYS };
const whole = aliasOf("disk_a", "/mnt/data");
const part = aliasOf("disk_a", "/mnt/assets");
const grants = new Map<string, Grant>([
  [whole, { disk_id: "disk_a", mount_path: "/mnt/data" }],
  [part, { disk_id: "disk_a", mount_path: "/mnt/assets", sub_path: "project/assets" }],
]);
const warnings: string[] = [];
const failures = new Map<Grant, string>();
/** The test S3 server is on loopback: listed, as an operator lists a LAN endpoint. */
let rules: OutboundRules = { privateEgress: ["127.0.0.1/32"] };

before(async () => {
  s3 = await startS3("127.0.0.1", ["data"]);
  target.endpoint = s3.endpoint;
  proxy = new DiskProxy({
    grantsOf: (addr) => (addr === "127.0.0.1" || addr === "::ffff:127.0.0.1" ? grants : undefined),
    target: (id) => (id === "disk_a" ? target : undefined),
    outcome: (g, f) => (f ? failures.set(g, f) : failures.delete(g)),
    rules: () => rules,
    log: { warn: (m, f) => warnings.push(`${m} ${JSON.stringify(f)}`) },
  });
  base = `http://127.0.0.1:${await proxy.listen("127.0.0.1")}`;
});
after(async () => {
  await proxy.close();
  await s3.close();
});

test("a request signed with dummy keys is re-signed and lands in the real bucket", async () => {
  const put = await s3Call(base, "PUT", `/${whole}/hello.txt`, { body: Buffer.from("hi there\n") });
  assert.equal(put.status, 200, put.body.toString());
  const direct = await s3Call(s3.endpoint, "GET", "/data/hello.txt", { keys: S3_KEYS });
  assert.equal(direct.body.toString(), "hi there\n");
  const back = await s3Call(base, "GET", `/${whole}/hello.txt`);
  assert.equal(back.status, 200);
  assert.equal(back.res.headers.connection, "close", "no connection outlives its request (pause/resume)");
  assert.equal(back.body.toString(), "hi there\n");
  const direct403 = await s3Call(s3.endpoint, "GET", "/data/hello.txt");
  assert.equal(direct403.status, 403, "the dummy signature itself is refused by the real server");
});

test("a sub_path mount reaches only its prefix; listings come back from the real bucket", async () => {
  assert.equal(
    (await s3Call(base, "PUT", `/${part}/project/assets/a.png`, { body: Buffer.from("png") })).status,
    200,
  );
  const out = await s3Call(base, "PUT", `/${part}/project/secret.txt`, { body: Buffer.from("x") });
  assert.equal(out.status, 403);
  assert.match(out.body.toString(), /AccessDenied.*outside/);
  const list = await s3Call(base, "GET", `/${part}/?list-type=2&prefix=project/assets/&delimiter=/`);
  assert.equal(list.status, 200);
  assert.match(list.body.toString(), /<Key>project\/assets\/a.png<\/Key>/);
  assert.equal((await s3Call(base, "GET", `/${part}/?list-type=2&prefix=`)).status, 403);
  assert.equal(
    (await s3Call(base, "GET", "/data/hello.txt")).status,
    403,
    "the real bucket name is no alias",
  );
});

test("bodies stream: 24 MiB up and down in small chunks", async () => {
  const chunk = Buffer.alloc(64 * 1024, 7);
  let n = 0;
  const body = new Readable({
    read() {
      this.push(n++ < 384 ? chunk : null);
    },
  });
  const put = await s3Call(base, "PUT", `/${whole}/big.bin`, {
    body,
    headers: { "content-length": String(384 * chunk.length) },
  });
  assert.equal(put.status, 200, put.body.toString());
  const got = await s3Call(base, "GET", `/${whole}/big.bin`);
  assert.equal(got.body.length, 384 * chunk.length);
  assert.ok(got.body.every((b) => b === 7));
});

test("rotated keys are used at once: bad ones give the server's 403 through the proxy", async () => {
  target.secret_key = "wrong";
  try {
    const r = await s3Call(base, "GET", `/${whole}/hello.txt`);
    assert.equal(r.status, 403);
    assert.match(r.body.toString(), /SignatureDoesNotMatch/);
    assert.match(failures.get(grants.get(whole)!) ?? "", /refused the disk's credentials/);
  } finally {
    target.secret_key = S3_KEYS.secret_key;
  }
  assert.equal((await s3Call(base, "GET", `/${whole}/hello.txt`)).status, 200);
  assert.equal(failures.size, 0, "a success clears the mount's failure");
  assert.equal((await s3Call(base, "GET", `/${whole}/absent.txt`)).status, 404);
  assert.equal(failures.size, 0, "a missing object is not the disk's failure");
  target.bucket = "gone";
  try {
    assert.equal((await s3Call(base, "GET", `/${whole}/?list-type=2`)).status, 404);
    assert.equal(failures.get(grants.get(whole)!), `no bucket gone at ${s3.endpoint}`);
    // An object's HEAD has no body to say which is missing: it leaves the failure as it was.
    assert.equal((await s3Call(base, "HEAD", `/${whole}/hello.txt`)).status, 404);
    assert.equal(failures.get(grants.get(whole)!), `no bucket gone at ${s3.endpoint}`);
    failures.clear();
    // A write into the vanished bucket names it in the body: that is the disk's failure too.
    const put = await s3Call(base, "PUT", `/${whole}/new.txt`, { body: Buffer.from("x") });
    assert.equal(put.status, 404, put.body.toString());
    assert.equal(failures.get(grants.get(whole)!), `no bucket gone at ${s3.endpoint}`);
  } finally {
    target.bucket = "data";
  }
});

test("an unreachable endpoint is a 502, and the keys are in no warning", async () => {
  const saved = target.endpoint;
  target.endpoint = "http://127.0.0.1:1";
  try {
    const r = await s3Call(base, "GET", `/${whole}/hello.txt`);
    assert.equal(r.status, 502);
    assert.match(failures.get(grants.get(whole)!) ?? "", /unreachable from the host: ECONNREFUSED/);
  } finally {
    target.endpoint = saved;
  }
  assert.ok(warnings.length > 0);
  for (const w of warnings) assert.ok(!w.includes(S3_KEYS.secret_key));
});

test("an endpoint at an address the guest may not reach is refused before connecting, by literal or by name", async () => {
  const saved = target.endpoint;
  const port = new URL(saved).port;
  try {
    // 127.0.0.2 is loopback too, outside the listed /32 (nothing listens there: unrefused, it is a 502)
    target.endpoint = `http://127.0.0.2:${port}`;
    const lit = await s3Call(base, "GET", `/${whole}/hello.txt`);
    assert.equal(lit.status, 403, lit.body.toString());
    assert.match(
      lit.body.toString(),
      /AccessDenied.*127\.0\.0\.2, an address in the private or reserved range 127\.0\.0\.0\/8/,
    );
    assert.match(
      failures.get(grants.get(whole)!) ?? "",
      /is at 127\.0\.0\.2.*CREATEOS_SANDBOX_PRIVATE_EGRESS/,
    );
    // a name is checked on what it resolves to, at the connection: localhost is 127.0.0.1 (and ::1)
    // (refusals first: a connection made stays in the agent's pool, to the address that was checked)
    target.endpoint = `http://localhost:${port}`;
    rules = { privateEgress: [] };
    const named = await s3Call(base, "GET", `/${whole}/hello.txt`);
    assert.equal(named.status, 403, "a name whose addresses are not listed");
    assert.match(named.body.toString(), /localhost is at (127\.0\.0\.1|::1)/);
    rules = { privateEgress: ["127.0.0.1/32"], never: ["127.0.0.0/8"] };
    assert.equal((await s3Call(base, "GET", `/${whole}/hello.txt`)).status, 403, "never wins over listed");
    rules = { privateEgress: ["127.0.0.1/32"] };
    assert.equal((await s3Call(base, "GET", `/${whole}/hello.txt`)).status, 200, "listed 127.0.0.1/32");
  } finally {
    target.endpoint = saved;
    rules = { privateEgress: ["127.0.0.1/32"] };
  }
});

test("only the headers S3 defines reach the endpoint", async () => {
  let seen: IncomingHttpHeaders = {};
  const spy = createServer((req, res) => {
    seen = req.headers;
    res.end("ok");
  });
  await new Promise<void>((r) => spy.listen(0, "127.0.0.1", r));
  const saved = target.endpoint;
  target.endpoint = `http://127.0.0.1:${(spy.address() as AddressInfo).port}`;
  try {
    const r = await fetch(`${base}/${whole}/k`, {
      headers: {
        "metadata-flavor": "Google",
        "x-aws-ec2-metadata-token": "t",
        "x-forwarded-for": "1.2.3.4",
        "x-amz-meta-color": "blue",
        range: "bytes=0-1",
      },
    });
    assert.equal(r.status, 200);
    assert.equal(seen["x-amz-meta-color"], "blue");
    assert.equal(seen.range, "bytes=0-1");
    for (const h of ["metadata-flavor", "x-aws-ec2-metadata-token", "x-forwarded-for"])
      assert.equal(seen[h], undefined, h);
    assert.match(String(seen.authorization), /^AWS4-HMAC-SHA256 Credential=/);
  } finally {
    target.endpoint = saved;
    spy.close();
  }
});
