import assert from "node:assert/strict";
import { test } from "node:test";
import { type Grant, aliasOf, scope } from "./scope.js";

const whole = aliasOf("disk_a", "/mnt/data");
const part = aliasOf("disk_a", "/mnt/assets");
const grants = new Map<string, Grant>([
  [whole, { disk_id: "disk_a", mount_path: "/mnt/data" }],
  [part, { disk_id: "disk_a", mount_path: "/mnt/assets", sub_path: "project/assets" }],
]);
const q = (s = "") => new URLSearchParams(s);
const ok = (m: string, p: string, s = "") => scope(m, p, q(s), grants).ok;

test("aliases are valid bucket names, distinct per disk and path", () => {
  assert.match(whole, /^[a-z0-9][a-z0-9-]{2,62}$/);
  assert.notEqual(whole, part);
  assert.notEqual(aliasOf("disk_b", "/mnt/data"), whole);
});

test("object operations inside the mount pass, with the decoded key", () => {
  const r = scope("PUT", `/${whole}/dir/a%20b.txt`, q(), grants);
  assert.ok(r.ok && r.key === "dir/a b.txt" && r.grant.mount_path === "/mnt/data");
  assert.ok(ok("GET", `/${part}/project/assets/x.png`));
  assert.ok(ok("HEAD", `/${part}/project/assets/`));
  assert.ok(ok("DELETE", `/${part}/project/assets/old`));
  assert.ok(ok("POST", `/${part}/project/assets/big`, "uploads"));
  assert.ok(ok("PUT", `/${part}/project/assets/big`, "partNumber=1&uploadId=u1"));
});

test("keys outside the sub_path, unknown aliases and other buckets are refused", () => {
  assert.equal(ok("GET", `/${part}/project/other/x`), false);
  assert.equal(ok("GET", `/${part}/project/assets-evil/x`), false);
  assert.equal(ok("GET", `/${part}/project/assets/../secret`), false);
  assert.equal(ok("GET", `/${part}/project/assets/%2e%2e/secret`), false);
  assert.equal(ok("GET", "/real-bucket/x"), false);
  assert.equal(ok("GET", `/${aliasOf("disk_a", "/mnt/else")}/x`), false);
  assert.equal(ok("GET", "/"), false);
});

test("listings must stay inside the sub_path; bucket changes are refused", () => {
  assert.ok(ok("GET", `/${whole}/`, "list-type=2&prefix=&delimiter=/&max-keys=1000"));
  assert.ok(ok("GET", `/${part}/`, "list-type=2&prefix=project/assets/&delimiter=/"));
  assert.ok(ok("GET", `/${part}/`, "location"));
  assert.ok(ok("HEAD", `/${part}/`));
  assert.equal(ok("GET", `/${part}/`, "list-type=2&prefix=project/"), false);
  assert.equal(ok("GET", `/${part}/`, "list-type=2&prefix=project/assets"), false);
  assert.equal(ok("GET", `/${part}/`, "list-type=2"), false);
  assert.equal(ok("DELETE", `/${whole}/`), false);
  assert.equal(ok("PUT", `/${whole}/`, "policy"), false);
  assert.equal(ok("GET", `/${whole}/`, "acl"), false);
  assert.equal(ok("POST", `/${whole}/`, "delete"), false);
  assert.equal(ok("PUT", `/${whole}/x`, "acl"), false);
  assert.equal(ok("POST", `/${whole}/x`), false);
});
