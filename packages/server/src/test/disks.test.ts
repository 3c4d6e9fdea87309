/**
 * The disks API against a real S3 server (s3rver behind a SigV4-checking front, on loopback), without an
 * engine: registration and its checks, idempotency, listing, rotation, deletion, tenancy, and that the
 * keys appear in no response, no log line and not in clear in the database.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { S3_KEYS, type TestS3, startS3 } from "@createos-sandbox/hostd/disks/s3test";
import { type ServerProc, call, cleanup, newUser, startProc } from "./helpers.js";

describe("disks API", () => {
  let s: ServerProc;
  let s3: TestS3;
  let key: string;
  let other: string;
  const bodies: string[] = [];
  const req = async (method: string, path: string, body?: unknown, as = key) => {
    const r = await call(s.url, method, path, { key: as, ...(body !== undefined ? { body } : {}) });
    bodies.push(r.text);
    return r;
  };
  const disk = (name: string, over: Record<string, unknown> = {}, creds = S3_KEYS) => ({
    name,
    kind: "s3",
    config: { bucket: "data", endpoint: s3.endpoint, use_path_style: true, ...over },
    credentials: creds,
  });

  before(async () => {
    s3 = await startS3("127.0.0.1", ["data", "other"]);
    // the test S3 server is on loopback: listed, as an operator lists a LAN endpoint (protocol/outbound.ts)
    s = await startProc({ env: { CREATEOS_SANDBOX_PRIVATE_EGRESS: "127.0.0.1/32" } });
    key = s.adminKey;
    other = await newUser(s.dataDir, "bob");
  });
  after(async () => {
    await s.stop();
    await s3.close();
    cleanup(s.dataDir);
  });

  it("registers a reachable bucket, idempotently by name, and never returns the keys", async () => {
    const a = await req("POST", "/v1/disks", disk("my-data"));
    assert.equal(a.status, 200, a.text);
    assert.match(a.json.data.id, /^disk_[0-9a-z]{26}$/);
    assert.deepEqual(a.json.data.config, { bucket: "data", endpoint: s3.endpoint, use_path_style: true });
    assert.equal(a.json.data.credentials, undefined);
    const again = await req("POST", "/v1/disks", disk("my-data"));
    assert.equal(again.json.data.id, a.json.data.id);
    assert.equal((await req("GET", `/v1/disks/${a.json.data.id}`)).json.data.name, "my-data");
    assert.equal((await req("GET", "/v1/disks/my-data")).json.data.id, a.json.data.id);
    const list = await req("GET", "/v1/disks?limit=1");
    assert.equal(list.json.data.pagination.total, 1);
    assert.equal(list.json.data.data[0].id, a.json.data.id);
    assert.equal((await req("GET", "/v1/disks/my-data", undefined, other)).status, 404, "another tenant's");
  });

  it("each failing check is a 400 that says which", async () => {
    const auth = await req("POST", "/v1/disks", disk("bad-secret", {}, { ...S3_KEYS, secret_key: "nope" }));
    assert.equal(auth.status, 400);
    assert.match(auth.json.data.credentials, /refused these credentials.*SignatureDoesNotMatch/);
    const ak = await req("POST", "/v1/disks", disk("bad-key", {}, { ...S3_KEYS, access_key: "AKIANOPE" }));
    assert.match(ak.json.data.credentials, /InvalidAccessKeyId/);
    const missing = await req("POST", "/v1/disks", disk("no-bucket", { bucket: "absent" }));
    assert.equal(missing.status, 400);
    assert.match(missing.json.data["config.bucket"], /no bucket absent at/);
    const down = await req("POST", "/v1/disks", disk("down", { endpoint: "http://127.0.0.1:1" }));
    assert.equal(down.status, 400);
    assert.match(down.json.data["config.endpoint"], /ECONNREFUSED/);
    assert.equal((await req("GET", "/v1/disks")).json.data.pagination.total, 1, "none of them was kept");
  });

  it("an endpoint the guests may not reach is refused before anything is sent, by literal or by name", async () => {
    const port = new URL(s3.endpoint).port;
    // 127.0.0.2 is loopback outside the listed /32; unrefused, the check would get ECONNREFUSED
    const lit = await req("POST", "/v1/disks", disk("loop", { endpoint: `http://127.0.0.2:${port}` }));
    assert.equal(lit.status, 400, lit.text);
    assert.equal(
      lit.json.data["config.endpoint"],
      "the endpoint 127.0.0.2 is at 127.0.0.2, an address in the private or reserved range 127.0.0.0/8: disks reach only public addresses and the private ranges the operator lists in CREATEOS_SANDBOX_PRIVATE_EGRESS",
    );
    const v6 = await req("POST", "/v1/disks", disk("v6", { endpoint: `http://[::1]:${port}` }));
    assert.match(v6.json.data["config.endpoint"], /is at ::1, not a public IPv6 address/);
    // by name, on what it resolves to: localhost is the listed 127.0.0.1 here, and refused where unlisted
    const named = await req("POST", "/v1/disks", disk("named", { endpoint: `http://localhost:${port}` }));
    assert.equal(named.status, 200, `localhost reaches the listed 127.0.0.1: ${named.text}`);
    assert.equal((await req("DELETE", "/v1/disks/named")).status, 200);
    const strict = await startProc();
    try {
      const r = await call(strict.url, "POST", "/v1/disks", {
        key: strict.adminKey,
        body: disk("named", { endpoint: `http://localhost:${port}` }),
      });
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.data["config.endpoint"], /^the endpoint localhost is at 127\.0\.0\.1, an address/);
    } finally {
      await strict.stop();
      cleanup(strict.dataDir);
    }
  });

  it("rotates keys (empty ones refused) and deletes by name; the name is free again", async () => {
    const empty = await req("PATCH", "/v1/disks/my-data", {
      credentials: { access_key: "", secret_key: "" },
    });
    assert.equal(empty.status, 400);
    const rot = await req("PATCH", "/v1/disks/my-data", { credentials: S3_KEYS });
    assert.equal(rot.status, 200, rot.text);
    assert.equal(rot.json.data.name, "my-data");
    const del = await req("DELETE", "/v1/disks/my-data");
    assert.deepEqual(del.json.data, { deleted: true });
    assert.equal((await req("GET", "/v1/disks/my-data")).status, 404);
    assert.equal((await req("DELETE", "/v1/disks/my-data")).status, 404);
    const back = await req("POST", "/v1/disks", disk("my-data"));
    assert.equal(back.status, 200);
  });

  it("the secret key is in no response, no log line and not in clear in the database", async () => {
    for (const b of bodies) assert.ok(!b.includes(S3_KEYS.secret_key), b);
    assert.ok(!s.logs.join("\n").includes(S3_KEYS.secret_key));
    assert.ok(!s.logs.join("\n").includes(S3_KEYS.access_key));
    for (const f of readdirSync(s.dataDir).filter((n) => n.startsWith("db.sqlite"))) {
      const raw = readFileSync(join(s.dataDir, f));
      assert.ok(!raw.includes(S3_KEYS.secret_key), f);
      assert.ok(!raw.includes(S3_KEYS.access_key), f);
    }
    const keyFile = join(s.dataDir, "disk-key");
    assert.equal(readFileSync(keyFile).length, 32);
  });
});
