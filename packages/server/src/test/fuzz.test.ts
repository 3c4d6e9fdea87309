/**
 * Property: whatever a client sends to any route — random JSON, schema-shaped bodies with wrong values,
 * junk queries, wrong content types, odd ids — the answer is never a 500, always a JSend envelope with a
 * request id, and a rejected request changes nothing.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { type ServerProc, call, cleanup, newUser, startProc } from "./helpers.js";

const SB = "sb-01jq0000000000000000000000";

const ROUTES: [string, string][] = [
  ["POST", "/v1/sandboxes"],
  ["GET", "/v1/sandboxes"],
  ["GET", "/v1/sandboxes/{id}"],
  ["PATCH", "/v1/sandboxes/{id}"],
  ["DELETE", "/v1/sandboxes/{id}"],
  ["GET", "/v1/sandboxes/by-ip/{id}"],
  ["POST", "/v1/sandboxes/{id}/pause"],
  ["POST", "/v1/sandboxes/{id}/resume"],
  ["POST", "/v1/sandboxes/{id}/fork"],
  ["POST", "/v1/sandboxes/{id}/resize"],
  ["POST", "/v1/sandboxes/{id}/exec"],
  ["PUT", "/v1/sandboxes/{id}/files"],
  ["GET", "/v1/sandboxes/{id}/files"],
  ["GET", "/v1/sandboxes/{id}/egress"],
  ["PUT", "/v1/sandboxes/{id}/egress"],
  ["GET", "/v1/sandboxes/{id}/bandwidth"],
  ["POST", "/v1/sandboxes/{id}/bandwidth/recharge"],
  ["POST", "/v1/sandboxes/{id}/ssh-pubkeys"],
  ["POST", "/v1/sandboxes/{id}/access-token"],
  ["GET", "/v1/sandboxes/{id}/access-token"],
  ["POST", "/v1/sandboxes/{id}/access-token/rotate"],
  ["DELETE", "/v1/sandboxes/{id}/access-token"],
  ["POST", "/v1/sandboxes/{id}/networks"],
  ["DELETE", "/v1/sandboxes/{id}/networks/{id}"],
  ["GET", "/v1/sandboxes/{id}/disks"],
  ["POST", "/v1/sandboxes/{id}/disks"],
  ["DELETE", "/v1/sandboxes/{id}/disks/{id}"],
  ["POST", "/v1/sandboxes/{id}/shell"],
  ["POST", "/v1/sandboxes/{id}/tunnel/{id}"],
  ["POST", "/v1/sandboxes/{id}/processes"],
  ["GET", "/v1/sandboxes/{id}/processes/{id}/wait"],
  ["GET", "/v1/networks"],
  ["POST", "/v1/networks"],
  ["GET", "/v1/networks/{id}"],
  ["DELETE", "/v1/networks/{id}"],
  ["GET", "/v1/disks"],
  ["POST", "/v1/disks"],
  ["GET", "/v1/disks/{id}"],
  ["PATCH", "/v1/disks/{id}"],
  ["DELETE", "/v1/disks/{id}"],
  ["GET", "/v1/templates"],
  ["POST", "/v1/templates"],
  ["GET", "/v1/templates/{id}"],
  ["GET", "/v1/templates/{id}/logs"],
  ["DELETE", "/v1/templates/{id}"],
  ["GET", "/v1/whoami"],
  ["GET", "/v1/shapes"],
  ["GET", "/v1/rootfs"],
  ["GET", "/v1/hosts"],
  ["GET", "/healthz"],
  ["GET", "/readyz"],
];

const FIELDS = [
  "shape",
  "rootfs",
  "name",
  "disk_mib",
  "envs",
  "egress",
  "ssh_pubkeys",
  "auto_pause_after_seconds",
  "bandwidth_quota_bytes",
  "networks",
  "disks",
  "region",
  "cmd",
  "args",
  "env",
  "stdin",
  "stream",
  "keys",
  "add_bytes",
  "ingress_enabled",
  "disable_auto_pause",
  "start_paused",
  "id",
  "kind",
  "config",
  "credentials",
  "dockerfile",
  "disk_id",
  "mount_path",
  "sub_path",
];

const idArb = fc.oneof(
  fc.constant(SB),
  fc.constant("sb_01JQ0000000000000000000000"),
  fc.constant("%ZZ"),
  fc.constant("..%2F.."),
  fc.string({ maxLength: 40 }).map((s) => encodeURIComponent(s) || "x"),
);

const bodyArb = fc.oneof(
  fc.constant(undefined),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc
    .dictionary(
      fc.constantFrom(...FIELDS),
      fc.oneof(fc.jsonValue(), fc.string(), fc.integer(), fc.constant(null)),
      {
        maxKeys: 6,
      },
    )
    .map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc.constant('{"a":'),
  fc.constant("\u0000\uffff"),
);

const queryArb = fc.oneof(
  fc.constant(""),
  fc.constant("?limit=-1"),
  fc.constant("?limit=1e9&offset=x"),
  fc.constant("?path=relative"),
  fc.constant("?path=/etc/hostname&stream=true"),
  fc.constant("?status=bogus"),
  fc.constant("?mount_path=/mnt"),
  fc.string({ maxLength: 60 }).map((s) => `?${encodeURIComponent(s)}=${encodeURIComponent(s)}`),
);

const ctArb = fc.constantFrom(
  "application/json",
  "text/plain",
  "application/x-www-form-urlencoded",
  "",
  "application/json; charset=utf-8",
);

let s: ServerProc;
let key: string;

before(async () => {
  s = await startProc({ env: { CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0" } });
  key = await newUser(s.dataDir, "fuzz");
  await call(s.url, "POST", "/v1/networks", { key, body: { name: "keep" } });
});
after(async () => {
  await s.stop();
  cleanup(s.dataDir);
});

async function snapshot(): Promise<string> {
  const parts = await Promise.all([
    call(s.url, "GET", "/v1/networks?limit=500", { key }),
    call(s.url, "GET", "/v1/sandboxes?limit=500", { key }),
    call(s.url, "GET", "/v1/whoami", { key }),
  ]);
  return JSON.stringify(parts.map((p) => p.json?.data));
}

test("random requests to every route: no 500, JSend always, rejected requests change nothing", async () => {
  let state = await snapshot();
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...ROUTES),
      idArb,
      idArb,
      queryArb,
      bodyArb,
      ctArb,
      fc.boolean(),
      async ([method, pattern], id1, id2, query, body, ct, withKey) => {
        let n = 0;
        const path = pattern.replace(/\{id\}/g, () => (n++ === 0 ? id1 : id2));
        const headers: Record<string, string> = {};
        if (ct) headers["content-type"] = ct;
        const r = await call(s.url, method, path + query, {
          ...(withKey ? { key } : {}),
          ...(body !== undefined && method !== "GET" ? { raw: body } : {}),
          headers,
        });
        assert.ok(
          r.status !== 500 && r.status !== 502,
          `${method} ${path}${query} ${body} → ${r.status} ${r.text}`,
        );
        assert.ok(r.status < 500 || r.status === 501 || r.status === 503, `${r.status} ${r.text}`);
        assert.ok(r.headers.get("x-request-id"), "request id");
        assert.ok(
          ["success", "fail", "error"].includes(r.json?.status),
          `not JSend: ${r.text.slice(0, 200)}`,
        );
        const now = await snapshot();
        if (r.status >= 300) assert.equal(now, state, `${method} ${path} → ${r.status} changed state`);
        state = now;
      },
    ),
    { numRuns: 400, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 100000) },
  );
});
