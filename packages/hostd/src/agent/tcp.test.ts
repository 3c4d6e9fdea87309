/** TCP from inside the guest against the real agent in --listen mode. */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import type { Duplex } from "node:stream";
import { test } from "node:test";
import { INITIAL_WINDOW } from "@createos-sandbox/protocol";
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

/** A loopback server running `onConn` per connection; resolves its port, closes after `use`. */
async function withServer(onConn: (c: net.Socket) => void, use: (port: number) => Promise<void>) {
  const server = net.createServer({ allowHalfOpen: true }, onConn);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    await use((server.address() as net.AddressInfo).port);
  } finally {
    server.close();
  }
}

test(
  "tcp: the guest half-closes first, the host still writes after that EOF",
  { timeout: 20_000 },
  async () => {
    // A reply of many windows to a server slow to read: the agent still holds some of it when the
    // host's stream finishes, and must deliver it.
    const reply = randomBytes(16 << 20);
    let received!: Promise<Buffer>;
    const onConn = (c: net.Socket) => {
      received = new Promise((resolve) => {
        const parts: Buffer[] = [];
        c.on("data", (b: Buffer) => parts.push(b));
        c.pause();
        setTimeout(() => c.resume(), 300);
        // 'close' too: a connection torn down under us must fail the assertion, not hang.
        c.on("end", () => resolve(Buffer.concat(parts)));
        c.on("close", () => resolve(Buffer.concat(parts)));
        c.on("error", () => {});
      });
      c.end("greeting");
    };
    await withServer(onConn, async (port) => {
      const s = await client.connectTcp(port);
      let got = "";
      s.on("data", (b: Buffer) => {
        got += b.toString();
      });
      await new Promise((r) => s.once("end", r));
      assert.equal(got, "greeting");
      await new Promise<void>((resolve, reject) =>
        s.end(reply, (err?: Error | null) => (err ? reject(err) : resolve())),
      );
      const back = await received;
      assert.equal(back.length, reply.length);
      assert.ok(back.equals(reply));
    });
  },
);

/** Reads `s` to its end through `stream.read()` only, as a paused-mode consumer does. */
async function readPaused(s: Duplex): Promise<Buffer[]> {
  const parts: Buffer[] = [];
  const ended = new Promise((r) => s.once("end", r));
  const pull = () => {
    for (let b: Buffer | null = s.read(); b !== null; b = s.read()) parts.push(b);
  };
  s.on("readable", pull);
  await ended;
  return parts;
}

for (const mode of ["for await", "read()"] as const) {
  test(
    `tcp: an 8 MiB flood, held to one window while unread, then read with ${mode}`,
    { timeout: 30_000 },
    async () => {
      const flood = randomBytes(8 << 20);
      await withServer(
        (c) => c.end(flood),
        async (port) => {
          const s = await client.connectTcp(port);
          s.end();
          await new Promise((r) => setTimeout(r, 400));
          assert.ok(s.readableLength <= INITIAL_WINDOW, `buffered ${s.readableLength}`);
          assert.ok(s.readableLength > 0);
          const parts: Buffer[] = [];
          if (mode === "for await") for await (const b of s) parts.push(b as Buffer);
          else parts.push(...(await readPaused(s)));
          const body = Buffer.concat(parts);
          assert.equal(body.length, flood.length);
          const hash = (b: Buffer) => createHash("sha256").update(b).digest("hex");
          assert.equal(hash(body), hash(flood));
        },
      );
    },
  );
}

test("the agent is still healthy and idle", () => assertIdle(ta));
