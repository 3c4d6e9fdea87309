/**
 * The agent protocol tested from the TypeScript side against the real Go binary in --listen mode:
 * hello and reconnects, resync, events, RPCs. exec, pty, files and tcp have their own files.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { FrameDecoder, FrameKind, HostdError, encodeJson } from "@createos-sandbox/protocol";
import { AgentClient, type AgentEvent } from "./client.js";
import { assertIdle, until, useAgent } from "./testagent.js";

const ta = useAgent();
const { client, tmp, sock, run } = ta;

test("hello answers with the agent's identity", async () => {
  const h = await client.hello({ timeoutMs: 5000 });
  assert.equal(h.version, 1);
  assert.match(h.agent, /^createos-agent /);
  assert.match(h.boot_id, /^[0-9a-f]{32}$/);
  assert.equal(h.pid, ta.agent.pid);
});

test("a hello carrying the identity applies it before answering; a bare hello neither applies nor undoes it", async () => {
  let attempts = 0;
  const h = await client.hello({
    timeoutMs: 5000,
    identity: () => {
      attempts++;
      return { envs: { FROM_HELLO: "yes" }, time_ns: Date.now() * 1e6 };
    },
  });
  assert.equal(h.configured, true);
  assert.equal(typeof h.skew_ms, "number");
  assert.equal(typeof h.configure_us, "number");
  assert.ok(attempts >= 1);
  assert.equal((await run(["sh", "-c", "echo $FROM_HELLO"])).stdout, "yes\n");
  const bare = await client.hello({ timeoutMs: 5000 });
  assert.equal(bare.configured, undefined);
  assert.equal((await run(["sh", "-c", "echo $FROM_HELLO"])).stdout, "yes\n");
  await client.configure({ envs: {} });
});

test("hello times out with agent_unreachable when nobody listens", async () => {
  const c = new AgentClient(join(tmp, "nobody.sock"));
  const t0 = Date.now();
  await assert.rejects(c.hello({ timeoutMs: 300 }), (e: unknown) => {
    return e instanceof HostdError && e.code === "agent_unreachable";
  });
  assert.ok(Date.now() - t0 < 2000);
});

test("hello retries on a socket that accepts but does not answer yet (QEMU before the guest is up)", async () => {
  const front = join(tmp, "front.sock");
  const openAt = Date.now() + 700;
  const held: net.Socket[] = [];
  let conns = 0;
  const proxy = net.createServer((c) => {
    conns++;
    if (Date.now() < openAt) {
      held.push(c); // accepted, never answered: like a chardev whose guest port is closed
      c.on("error", () => {});
      return;
    }
    const up = net.createConnection(sock);
    c.pipe(up).pipe(c);
    c.on("error", () => up.destroy());
    up.on("error", () => c.destroy());
  });
  await new Promise<void>((r) => proxy.listen(front, r));
  const c = new AgentClient(front, { helloAttemptMs: 200 });
  try {
    const t0 = Date.now();
    const h = await c.hello({ timeoutMs: 5000 });
    assert.equal(h.version, 1);
    assert.ok(Date.now() - t0 >= 600, "answered only once the proxy opened");
    assert.ok(conns >= 3, `reconnected (${conns} connections)`);
    assert.equal((await c.exec({ argv: ["true"] })).exit_code, 0);
  } finally {
    c.close();
    for (const h of held) h.destroy();
    proxy.close();
  }
  await client.hello(); // the proxy's connection had replaced ours
});

test("the agent resyncs after garbage on the wire", async () => {
  const raw = net.createConnection(sock);
  await new Promise((r) => raw.once("connect", r));
  const dec = new FrameDecoder();
  const replies: Record<string, unknown>[] = [];
  raw.on("data", (b: Buffer) => {
    for (const f of dec.push(b)) {
      if (f.kind === FrameKind.RPC) replies.push(JSON.parse(f.payload.toString()) as Record<string, unknown>);
    }
  });
  // Half a frame header claiming an oversized payload, then junk, then a good hello and stats.
  raw.write(Buffer.from("c50a0300000000010fffffff0102030405", "hex"));
  raw.write(encodeJson(FrameKind.RPC, 0, { id: 1, method: "hello", params: { version: 1 } }));
  raw.write(encodeJson(FrameKind.RPC, 0, { id: 2, method: "stats", params: {} }));
  assert.ok(await until(() => replies.some((r) => r.id === 2), 3000), JSON.stringify(replies));
  const stats = replies.find((r) => r.id === 2)?.result as { resyncs: number };
  assert.ok(stats.resyncs >= 1, `resyncs ${stats.resyncs}`);
  raw.destroy();
  await client.hello();
});

test("self-signal HTTP: 202, then the event reaches the host", async () => {
  const events: AgentEvent[] = [];
  const onEvent = (e: AgentEvent) => events.push(e);
  client.on("event", onEvent);
  try {
    await client.stats(); // connected
    const res = await fetch(`http://${ta.selfAddr}/self/pause?reason=${"r".repeat(200)}`, { method: "POST" });
    assert.equal(res.status, 202);
    const body = (await res.json()) as { accepted: boolean; action: string };
    assert.equal(body.action, "pause");
    assert.ok(await until(() => events.some((e) => e.event === "self"), 3000));
    const ev = events.find((e) => e.event === "self") as { action: string; reason: string };
    assert.equal(ev.action, "pause");
    assert.equal(ev.reason, "r".repeat(128));
    assert.equal((await fetch(`http://${ta.selfAddr}/self/pause`)).status, 405);
    assert.equal((await fetch(`http://${ta.selfAddr}/self/nope`, { method: "POST" })).status, 404);
    const del = await fetch(`http://${ta.selfAddr}/self/delete`, { method: "POST" });
    assert.equal(del.status, 202);
    assert.ok(await until(() => events.some((e) => e.event === "self" && e.action === "delete"), 3000));
  } finally {
    client.off("event", onEvent);
  }
});

test("self-signal while no host is connected is delivered after the next hello", async () => {
  client.close();
  await new Promise((r) => setTimeout(r, 100)); // the agent noticed the close
  const res = await fetch(`http://${ta.selfAddr}/self/delete?reason=offline`, { method: "POST" });
  assert.equal(res.status, 202);
  await new Promise((r) => setTimeout(r, 100));
  const got: AgentEvent[] = [];
  const onSelf = (e: AgentEvent) => got.push(e);
  client.on("self", onSelf);
  try {
    await client.hello();
    assert.ok(await until(() => got.length > 0, 3000), "event delivered");
    assert.deepEqual(
      got.map((e) => `${e.action}:${e.reason}`),
      ["delete:offline"],
    );
  } finally {
    client.off("self", onSelf);
  }
});

test("reconnect: a new connection drops the old channels, and everything works again", async () => {
  const before = await client.hello();
  const pending = client.exec({ argv: ["sleep", "30"] });
  const pendingErr = pending.then(
    () => undefined,
    (e: unknown) => e,
  );
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await client.stats()).open_channels, 1);
  // Another host connection replaces this one (as after a resume or a hostd restart).
  const other = new AgentClient(sock);
  const h = await other.hello({ timeoutMs: 5000 });
  assert.equal(h.boot_id, before.boot_id);
  const err = await pendingErr;
  assert.ok(err instanceof HostdError && err.code === "agent_unreachable", String(err));
  assert.equal((await other.stats()).open_channels, 0);
  assert.equal(
    (await run(["echo", "old client reconnects on demand"])).stdout,
    "old client reconnects on demand\n",
  );
  // The old client's reconnect replaced `other` in turn: the agent closed its connection.
  assert.ok(await until(() => !other.connected, 3000));
  other.close();
  // And an explicit close followed by an operation reconnects too.
  client.close();
  assert.equal((await run(["echo", "again"])).stdout, "again\n");
});

test("rpc: sync, quiesce, resize_fs, stats in listen mode", async () => {
  const s = await client.sync({ time_ns: BigInt(Date.now() + 5000) * 1_000_000n });
  assert.ok(s.skew_ms > 4000 && s.skew_ms < 6000, `skew ${s.skew_ms}`);
  const st = await client.stats();
  assert.ok(st.mem_available_kib > 0);
  assert.equal(typeof st.resyncs, "number");
  assert.deepEqual(await client.resizeFs(), { size_bytes: 0 });
});

test("quiesce holds channel output until thaw; replies still flow; hello lifts it too", async () => {
  let out = "";
  const p = client.exec(
    { argv: ["sh", "-c", "sleep 0.3; echo late"] },
    {
      onStdout: (b) => {
        out += b.toString();
      },
    },
  );
  await new Promise((r) => setTimeout(r, 100)); // started
  await client.quiesce();
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(out, "", "no output while quiesced");
  assert.equal((await client.stats()).open_channels, 1, "replies flow while quiesced");
  await client.thaw();
  const r = await p;
  assert.equal(out, "late\n");
  assert.equal(r.exit_code, 0);
  await client.quiesce();
  await client.hello();
  assert.equal((await run(["echo", "after quiesce"])).stdout, "after quiesce\n");
});

test("the agent is still healthy and idle", () => assertIdle(ta));
