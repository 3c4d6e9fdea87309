/** Request schemas answer the API's field-level reasons: keys, words and order as clients have had them. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ApiError } from "@createos-sandbox/protocol";
import { Type } from "@sinclair/typebox";
import { diskAttachment, forkBody, sshKeysBody } from "../routes/sandbox-bodies.js";
import { compileSchema, int, str, strings } from "../schema.js";
import { SandboxListQuery } from "../validate.js";

const fails = (v: (d: unknown) => object, data: unknown) =>
  ((v(data) as { error?: ApiError }).error?.data ?? null) as Record<string, string> | null;

test("null and empty strings are 'not given'; a required one is reported absent", () => {
  const v = compileSchema(
    Type.Object({ a: str("a", { required: true, max: 3 }), b: str("b", { re: /^x$/ }) }),
    "body",
  );
  for (const a of [undefined, null, ""]) assert.deepEqual(fails(v, { a, b: "" }), { a: "a is required" });
  assert.deepEqual(fails(v, { a: 5, b: null }), { a: "a must be a string" });
  // Lengths count UTF-16 units, as they always have: two emoji are four.
  assert.deepEqual(fails(v, { a: "😀😀" }), { a: "a must be at most 3 characters" });
  assert.deepEqual(fails(v, { a: "ok", b: "y" }), { b: "b has an invalid format" });
  assert.deepEqual(fails(v, { a: "ok" }), null);
});

test("integers: the type before the range, and only those a JavaScript number holds exactly", () => {
  const v = compileSchema(Type.Object({ n: int("n", { min: 1, max: Number.MAX_SAFE_INTEGER }) }), "body");
  assert.deepEqual(fails(v, { n: 2 ** 60 }), { n: "n must be an integer" });
  assert.deepEqual(fails(v, { n: 1.5 }), { n: "n must be an integer" });
  assert.deepEqual(fails(v, { n: 0 }), { n: `n must be between 1 and ${Number.MAX_SAFE_INTEGER}` });
  assert.deepEqual(fails(v, { n: null }), null);
});

test("a body that is not an object fails as `body`, with its required fields beside it", () => {
  const v = compileSchema(sshKeysBody, "body");
  assert.deepEqual(fails(v, [1]), {
    body: "request body must be a JSON object",
    keys: "keys must hold at least one key",
  });
  assert.deepEqual((v(null) as { value?: unknown }).value, undefined);
  assert.deepEqual(fails(v, { keys: [] }), { keys: "keys must hold at least one key" });
  assert.deepEqual(compileSchema(forkBody, "body")(undefined), { value: {} });
});

test("failures come in the order of the schema, item by item, whatever order Ajv found them in", () => {
  const v = compileSchema(
    Type.Object({
      list: strings("list", { max: 2, grammar: "egress" }),
      disks: Type.Optional(Type.Array(Type.Object(diskAttachment("disks")))),
    }),
    "body",
  );
  assert.deepEqual(Object.keys(fails(v, { disks: [{ disk_id: 5 }], list: ["bad rule", 7] })!), [
    "list",
    "disks.disk_id",
    "disks.mount_path",
  ]);
  assert.match(fails(v, { list: ["bad rule", 7] })!.list!, /^invalid egress rule "bad rule"/);
  assert.deepEqual(fails(v, { list: [1, 2, 3] }), { list: "list may hold at most 2 entries" });
});

test("the list's status is looked at once the page is well-formed", () => {
  const v = compileSchema(SandboxListQuery, "querystring");
  assert.deepEqual(fails(v, { limit: "x", status: "bogus" }), {
    limit: "limit must be a non-negative integer",
  });
  assert.deepEqual(fails(v, { status: "z".repeat(80) }), { status: `unknown status: ${"z".repeat(50)}` });
  assert.deepEqual(fails(v, { status: "" }), null);
});
