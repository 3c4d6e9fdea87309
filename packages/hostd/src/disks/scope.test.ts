import assert from "node:assert/strict";
import { test } from "node:test";
import { type Grant, aliasOf, copySource, scope } from "./scope.js";

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
  const bare = scope("GET", `/${part}/`, q("list-type=2"), grants);
  assert.ok(bare.ok && bare.prefix === "project/assets/", "a bare listing is narrowed to the sub_path");
  const all = scope("GET", `/${whole}/`, q("list-type=2"), grants);
  assert.ok(all.ok && all.prefix === undefined, "a whole-bucket mount lists as asked");
  assert.equal(ok("DELETE", `/${whole}/`), false);
  assert.equal(ok("PUT", `/${whole}/`, "policy"), false);
  assert.equal(ok("GET", `/${whole}/`, "acl"), false);
  assert.equal(ok("POST", `/${whole}/`, "delete"), false);
  assert.equal(ok("PUT", `/${whole}/x`, "acl"), false);
  assert.equal(ok("POST", `/${whole}/x`), false);
});

test("a copy source must be a mount of the same disk, inside its sub_path", () => {
  const dest = grants.get(part)!;
  const c = copySource(`/${part}/project/assets/a%20b.png?versionId=1`, grants, dest);
  assert.ok(c.ok && c.key === "project/assets/a b.png" && c.suffix === "?versionId=1");
  assert.ok(copySource(`${whole}/anything`, grants, dest).ok, "another mount of the same disk");
  assert.equal(copySource(`/${part}/project/secret`, grants, dest).ok, false);
  assert.equal(copySource("/data/x", grants, dest).ok, false, "the real bucket name is no alias");
  const other = new Map(grants).set("csb-other", { disk_id: "disk_b", mount_path: "/mnt/b" });
  assert.equal(copySource("/csb-other/x", other, dest).ok, false, "another disk");
  assert.equal(copySource(`/${whole}/a/../../x`, grants, dest).ok, false);
});
