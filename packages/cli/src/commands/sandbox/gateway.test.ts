import assert from "node:assert/strict";
import { test } from "node:test";
import { UsageError } from "../../framework/errors.js";
import { gatewaySshArgs, parseGateway } from "./gateway.js";

const ID = "sb-01jdx5k9v3m8q2w7e4r6t0y1ab";
const env = { HOME: "/home/u" };

test("--sandbox-gateway is host[:port], 2222 by default", () => {
  assert.deepEqual(parseGateway("gw.example.com", "x"), { host: "gw.example.com", port: 2222 });
  assert.deepEqual(parseGateway("127.0.0.1:2022", "x"), { host: "127.0.0.1", port: 2022 });
  assert.deepEqual(parseGateway("[::1]:22", "x"), { host: "::1", port: 22 });
  for (const bad of ["", "a b", "host:0", "host:70000", "user@host"])
    assert.throws(() => parseGateway(bad, "x"), UsageError, bad);
});

test("root logs into the gateway's own session as <id>@gateway, remembering its host key", () => {
  const a = gatewaySshArgs({ host: "127.0.0.1", port: 2022 }, ID, "root", "/k/id", env);
  assert.equal(a.at(-1), `${ID}@127.0.0.1`);
  assert.deepEqual(a.slice(a.indexOf("-p"), a.indexOf("-p") + 2), ["-p", "2022"]);
  assert.ok(a.includes("UserKnownHostsFile=/home/u/.ssh/known_hosts_createos"));
  assert.ok(a.includes("StrictHostKeyChecking=accept-new"));
  assert.deepEqual(a.slice(0, 2), ["-i", "/k/id"]);
});

test("another user goes through the gateway as a jump host to the guest's sshd", () => {
  const a = gatewaySshArgs({ host: "::1", port: 2222 }, ID, "dev", "/k/my key", env);
  assert.equal(a.at(-1), "dev@sandbox");
  const proxy = a.find((x) => x.startsWith("ProxyCommand="))!;
  // The jump carries the key itself (ssh -J would not) and is quoted for the shell ssh runs it with.
  assert.match(proxy, /'-i' '\/k\/my key'/);
  assert.match(proxy, /'-W' '%h:%p' 'sb-01jdx5k9v3m8q2w7e4r6t0y1ab@\[::1\]'$/);
  assert.match(proxy, /'-p' '2222'/);
});
