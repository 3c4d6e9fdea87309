import assert from "node:assert/strict";
import { test } from "node:test";
import { HostdError } from "@createos-sandbox/protocol";
import { AgentError, agentError, rpcError, toHostdError, unreachable } from "./errors.js";

test("an operation's error keeps the agent's errno and maps it to a HostdError code", () => {
  const cases: [string | undefined, string, string][] = [
    ["ENOENT", "ENOENT", "file_not_found"],
    ["ENOTDIR", "ENOTDIR", "file_not_found"],
    ["EISDIR", "EISDIR", "bad_request"],
    ["EEXIST", "EEXIST", "conflict"],
    ["ENOSPC", "ENOSPC", "capacity"],
    ["ETIMEDOUT", "ETIMEDOUT", "agent_unreachable"],
    ["EMFILE", "EMFILE", "internal"],
    ["ESOMETHINGNEW", "ESOMETHINGNEW", "internal"],
    ["constructor", "constructor", "internal"],
    [undefined, "EIO", "internal"],
  ];
  for (const [sent, code, hostd] of cases) {
    const e = agentError({ error: "boom", code: sent });
    assert.ok(e instanceof AgentError);
    assert.deepEqual([e.message, e.code, e.hostdCode], ["boom", code, hostd], String(sent));
    const h = toHostdError(e);
    assert.deepEqual([h.code, h.message], [hostd, "boom"]);
  }
  assert.equal(agentError({}).message, "agent error");
});

test("an RPC's error keeps its code but is always internal for the control plane", () => {
  const e = rpcError({ message: "unknown method x", code: "ENOSYS" });
  assert.deepEqual([e.message, e.code, e.hostdCode], ["unknown method x", "ENOSYS", "internal"]);
  assert.deepEqual([rpcError({}).message, rpcError({}).code], ["rpc failed", "EIO"]);
});

test("toHostdError passes HostdErrors through and wraps anything else as internal", () => {
  const u = unreachable("gone");
  assert.equal(toHostdError(u), u);
  assert.equal(u.code, "agent_unreachable");
  const w = toHostdError(new Error("plain"));
  assert.ok(w instanceof HostdError);
  assert.deepEqual([w.code, w.message], ["internal", "plain"]);
  assert.equal(toHostdError("text").message, "text");
});
