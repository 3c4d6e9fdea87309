/**
 * The `Upgrade: tcp-tunnel` shell route's framing after the shell is over, without a VM: the route's
 * upgrade handler on a plain TCP server, over a scripted app whose PTY is a PassThrough.
 *   node --test packages/server/dist/test/shell-tunnel.test.js
 */
import assert from "node:assert/strict";
import { type AddressInfo, connect, createServer } from "node:net";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import type { UpgradeCtx } from "../http/server.js";
import type { App } from "../routes/common.js";
import { streamRoutes } from "../routes/streams.js";

test("a frame over the limit ends the shell; what the client still sends is dropped, and it is let go", async () => {
  const ID = "sb-01hzzzzzzzzzzzzzzzzzzzzzzz";
  const row = { id: ID, user_id: "u1", status: "running" };
  const app = {
    cfg: {},
    store: { getSandbox: async () => row },
    sandboxes: {
      awaitRunning: async (r: unknown) => r,
      daemonFor: () => ({
        openPty: async () => {
          const stream = new PassThrough();
          stream.on("data", () => undefined);
          return { stream, exited: new Promise(() => undefined), resize() {} };
        },
      }),
      streamOpened() {},
      streamClosed() {},
      touch: async () => undefined,
    },
    tenantStreams: { open: () => ({ release() {} }) },
    log: { info() {}, warn() {} },
  } as unknown as App;
  const route = streamRoutes(app).find((r) => r.pattern.endsWith("/shell"));
  assert.ok(route?.upgrade);
  let serverClosed: Promise<boolean> | undefined;
  const srv = createServer({ allowHalfOpen: true }, (sock) => {
    serverClosed = new Promise<boolean>((r) => {
      sock.once("close", () => r(true));
      setTimeout(() => r(false), 8000).unref();
    });
    const u = {
      params: { id: ID },
      principal: { user_id: "u1" },
      logFields: {},
      head: Buffer.alloc(0),
      signal: new AbortController().signal,
      accept: () => sock,
    } as unknown as UpgradeCtx;
    void route.upgrade!(u);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  try {
    const c = connect({ port: (srv.address() as AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
    c.on("error", () => undefined);
    c.on("data", () => undefined);
    await new Promise((r) => c.once("connect", r));
    const before = process.memoryUsage().arrayBuffers;
    // a type-0 frame of 4 GiB: over the 1 MiB limit; then 64 MiB more, as a client that does not stop would
    const hdr = Buffer.alloc(5);
    hdr.writeUInt32BE(0xffffffff, 1);
    c.write(hdr);
    const chunk = Buffer.alloc(256 * 1024, 0x41);
    for (let i = 0; i < 256 && !c.destroyed; i++)
      if (!c.write(chunk)) await new Promise((r) => c.once("drain", r));
    assert.ok(process.memoryUsage().arrayBuffers - before < 48 << 20, "the server kept what it was sent");
    assert.equal(await serverClosed, true, "the server let the connection go");
    c.destroy();
  } finally {
    srv.close();
  }
});
