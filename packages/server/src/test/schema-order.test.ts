/**
 * The order and words of a 400's fields on the real route schemas, where Ajv meets the failures in another
 * order (a missing property before a wrong one beside it, an item's `if`/`then` before its properties).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ApiError } from "@createos-sandbox/protocol";
import { Type } from "@sinclair/typebox";
import type { App } from "../routes/common.js";
import { createBody, diskAttachment, forkBody } from "../routes/sandbox-bodies.js";
import { compileSchema } from "../schema.js";
import { ED25519 } from "./helpers.js";

const fails = (v: (d: unknown) => object, data: unknown) =>
  ((v(data) as { error?: ApiError }).error?.data ?? null) as Record<string, string> | null;
const app = { cfg: { autoPauseMinSeconds: 60, maxDiskMib: 65536 } } as unknown as App;

test("a missing field is reported where the schema has it, not first", () => {
  const attach = compileSchema(Type.Object(diskAttachment("disk")), "body");
  assert.deepEqual(Object.entries(fails(attach, { disk_id: 5, sub_path: "../x" })!), [
    ["disk.disk_id", "disk_id is required"],
    ["disk.mount_path", "mount_path must be an absolute path"],
    ["disk.sub_path", "sub_path must be relative and must not contain '..'"],
  ]);
  const create = compileSchema(createBody(app), "body");
  assert.deepEqual(Object.keys(fails(create, { name: "Bad", envs: 1 })!), ["shape", "name", "envs"]);
});

test("every field of a create body wrong at once: one message each, in the schema's order", () => {
  const v = compileSchema(createBody(app), "body");
  const got = fails(v, {
    shape: 5,
    rootfs: "x".repeat(201),
    name: "-bad-",
    disk_mib: 5,
    envs: { "1A": "x" },
    egress: ["ok.example.com", "bad rule", 3],
    ssh_pubkeys: [ED25519, "ssh-rsa nope"],
    ingress_enabled: "yes",
    auto_pause_after_seconds: 1.5,
    bandwidth_quota_bytes: 3,
    region: 1,
    host_id: ["h"],
    node_selector: [],
    networks: [{ id: "n" }, {}, { id: 5 }],
    disks: [{ mount_path: "rel", sub_path: "/abs" }, [], { disk_id: 5, mount_path: "/m" }],
  });
  assert.deepEqual(Object.entries(got!), [
    ["shape", "shape must be a string"],
    ["rootfs", "rootfs must be at most 200 characters"],
    [
      "name",
      "name must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
    ],
    ["disk_mib", "disk_mib must be 0 (shape default) or at least 1024"],
    ["envs", 'envs key "1A" must match ^[A-Za-z_][A-Za-z0-9_]*$'],
    [
      "egress",
      'invalid egress rule "bad rule": expected host, host:port, *.host, ip, ip:port, cidr or cidr:port',
    ],
    ["ssh_pubkeys", 'invalid OpenSSH public key: "ssh-rsa nope"'],
    ["ingress_enabled", "ingress_enabled must be true or false"],
    ["auto_pause_after_seconds", "auto_pause_after_seconds must be an integer"],
    ["bandwidth_quota_bytes", "bandwidth_quota_bytes is not settable at create; use bandwidth/recharge"],
    ["region", "region must be a string"],
    ["host_id", "host_id must be a string"],
    ["node_selector", "node_selector must be an object of strings"],
    ["networks", "each network needs an id (string)"],
    ["disks.disk_id", "disk_id is required"],
    ["disks.mount_path", "mount_path must be an absolute path"],
    ["disks.sub_path", "sub_path must be relative and must not contain '..'"],
  ]);
});

test("an array's own failure before its items'; an egress list that is not one", () => {
  const v = compileSchema(forkBody, "body");
  const networks = Array.from({ length: 17 }, () => ({}));
  assert.deepEqual(fails(v, { networks, egress: "x", envs: "A=1", start_paused: 0 }), {
    start_paused: "start_paused must be true or false",
    egress: "egress must be an array of strings",
    envs: 'envs must be an object of KEY: "value"',
    networks: "networks must be an array of {id} (at most 16)",
  });
  assert.deepEqual(Object.keys(fails(v, { networks: [{}], bandwidth_quota_bytes: -2 })!), [
    "bandwidth_quota_bytes",
    "networks",
  ]);
});
