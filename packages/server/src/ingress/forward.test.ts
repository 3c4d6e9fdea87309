/**
 * The ingress proxy against guests that misbehave, without a VM: the real `Ingress` over a scripted app
 * whose sandbox's port is a TCP server on loopback standing in for the guest.
 *   node --test packages/server/dist/ingress/forward.test.js
 */
import assert from "node:assert/strict";
import { type AddressInfo, type Server, type Socket, connect, createServer } from "node:net";
import { after, before, test } from "node:test";
import type { App } from "../routes/common.js";
import { Ingress, type IngressServer } from "./proxy.js";

const ID = "sb-01hzzzzzzzzzzzzzzzzzzzzzzz";
const HOST = `${ID.slice(3)}-8080.preview.test`;
let guestAnswer: (s: Socket, got: string) => void = () => undefined;
const guestGot: string[] = [];
let guest: Server;
let ingress: IngressServer;

before(async () => {
  guest = createServer((s) => {
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (got.includes("\r\n\r\n")) guestAnswer(s, got);
    });
    s.on("close", () => guestGot.push(got));
  });
  await new Promise<void>((r) => guest.listen(0, "127.0.0.1", r));
  const row = { id: ID, user_id: "u1", status: "running", ingress_enabled: true, bandwidth_ingress_bytes: 0 };
  const app = {
    cfg: {
      ingressDomain: "preview.test",
      ingressWakeTimeoutMs: 1000,
      ingressResponseTimeoutMs: 5000,
      maxHeaderBytes: 16384,
      headersTimeoutMs: 10000,
      requestTimeoutMs: 30000,
      keepAliveTimeoutMs: 5000,
      maxConnectionsPerIp: 100,
    },
    store: { getSandbox: async (id: string) => (id === ID ? row : undefined), updateSandbox: async () => {} },
    sandboxes: {
      daemonFor: () => ({
        connectTcp: async () => connect((guest.address() as AddressInfo).port, "127.0.0.1"),
      }),
      streamOpened() {},
      streamClosed() {},
      withLock: async (_id: string, f: () => Promise<unknown>) => f(),
    },
    tenantStreams: { open: () => ({ release() {} }) },
    log: { info() {}, warn() {} },
  };
  ingress = await new Ingress(app as unknown as App).listen("127.0.0.1:0");
});

after(async () => {
  await ingress.close();
  guest.close();
});

/** Sends `raw` to the ingress; resolves with all it answered once it closes or `ms` passed. */
function exchange(raw: string, ms = 1500): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(Number(new URL(ingress.url).port), "127.0.0.1", () => c.write(raw));
    let got = "";
    c.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    c.on("error", () => undefined);
    const t = setTimeout(() => {
      c.destroy();
      resolve(got);
    }, ms);
    c.on("close", () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

test("a guest's response head Node will not relay is a 502, and the control plane lives on", async () => {
  for (const line of ["HTTP/1.1 099 X", "HTTP/1.1 000 X", "HTTP/1.1 200 O\x01K", "HTTP/1.1 200 O\x7fK"]) {
    guestAnswer = (s) => s.end(`${line}\r\nContent-Length: 2\r\n\r\nhi`);
    const got = await exchange(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    assert.match(got, /^HTTP\/1\.1 502 /, `${JSON.stringify(line)}: ${JSON.stringify(got)}`);
  }
});

test("a chunked body on a GET reaches the guest chunked: no second request hides in it", async () => {
  guestAnswer = (s, got) => {
    if (got.endsWith("0\r\n\r\n")) s.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
  };
  guestGot.length = 0;
  const inner = "GET /admin HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n";
  const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
  const got = await exchange(
    `GET / HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`,
  );
  assert.match(got, /^HTTP\/1\.1 200 /);
  await new Promise((r) => setTimeout(r, 100));
  const seen = guestGot.join("");
  assert.match(seen, /\r\ntransfer-encoding: chunked\r\n/i, "framed as the client framed it");
  assert.ok(seen.includes(`\r\n\r\n${inner.length.toString(16)}\r\nGET /admin`), JSON.stringify(seen));
});

test("a refused upgrade's socket is let go a moment after its answer, though the client keeps it open", async () => {
  const c = connect({ port: Number(new URL(ingress.url).port), host: "127.0.0.1", allowHalfOpen: true });
  c.on("error", () => undefined);
  let got = "";
  c.on("data", (d: Buffer) => {
    got += d.toString("latin1");
  });
  await new Promise((r) => c.once("connect", r));
  const other = `${"sb-01hyyyyyyyyyyyyyyyyyyyyyyy".slice(3)}-8080.preview.test`;
  c.write(`GET / HTTP/1.1\r\nHost: ${other}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
  await new Promise((r) => c.once("end", r));
  assert.match(got, /^HTTP\/1\.1 404 /);
  // the server ended its side, and lets the socket go a moment later whatever the client does
  await new Promise((r) => setTimeout(r, 2500));
  const open = await new Promise<number>((r) => ingress.server.getConnections((_e, n) => r(n)));
  c.destroy();
  assert.equal(open, 0, "the server holds no connection");
});
