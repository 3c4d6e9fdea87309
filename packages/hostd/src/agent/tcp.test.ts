/** TCP from inside the guest against the real agent in --listen mode. */
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { assertIdle, useAgent } from "./testagent.js";

const ta = useAgent();
const { client } = ta;

test("tcp: echo through the guest with half-close both ways", async () => {
  const server = net.createServer({ allowHalfOpen: true }, (c) => {
    const parts: Buffer[] = [];
    c.on("data", (b: Buffer) => parts.push(b));
    c.on("end", () => {
      // Only after the client half-closed: reply, then close our side.
      c.end(Buffer.concat(parts).toString().toUpperCase());
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const s = await client.connectTcp(port);
    s.end("hello through the agent");
    const got = Buffer.concat(await s.toArray()).toString();
    assert.equal(got, "HELLO THROUGH THE AGENT");
    await assert.rejects(client.connectTcp(1), { code: "ECONNREFUSED" });
  } finally {
    server.close();
  }
});

test("the agent is still healthy and idle", () => assertIdle(ta));
