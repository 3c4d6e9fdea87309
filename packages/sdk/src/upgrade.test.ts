import assert from "node:assert/strict";
import type http from "node:http";
import net from "node:net";
import { after, test } from "node:test";
import { createClient } from "./client.js";
import { CreateosSandboxNotFoundError, CreateosSandboxValidationError } from "./errors.js";
import { Sandbox } from "./sandbox.js";
import { encodeDataFrames, encodeResizeFrame } from "./shell.js";
import { type TestServer, startServer, view } from "./test-helpers.js";
import { buildUpgradeRequest, parseResponseHead } from "./upgrade.js";

const servers: TestServer[] = [];
// Upgraded sockets leave the HTTP server's bookkeeping, so closeAllConnections() misses them.
const upgraded = new Set<net.Socket>();
after(async () => {
  for (const sock of upgraded) sock.destroy();
  for (const s of servers) await s.close();
});

type UpgradeHandler = (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => void;
async function upgradeServer(
  onUpgrade: UpgradeHandler,
): Promise<{ url: string; seen: http.IncomingMessage[] }> {
  const s = await startServer((_req, res) => {
    res.writeHead(500);
    res.end();
  });
  servers.push(s);
  const seen: http.IncomingMessage[] = [];
  s.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push(req);
    upgraded.add(socket);
    onUpgrade(req, socket, head);
  });
  return { url: s.url, seen };
}

const SWITCH = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\n\r\n";

/** Decodes client→server shell frames from a byte stream. */
function frameReader(onFrame: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      onFrame(buf.readUInt8(0), buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
    }
  };
}

function sandboxFor(url: string, id = "sb-up"): Sandbox {
  const c = createClient({ apiKey: "skp_upgrade_key", baseUrl: url });
  return new Sandbox(c.http, view(id, "running") as never);
}

test("shell frame encoding", () => {
  assert.deepEqual([...encodeResizeFrame(24, 80)], [1, 0, 0, 0, 4, 0, 24, 0, 80]);
  assert.deepEqual([...encodeResizeFrame(0x1234, 0xffff)], [1, 0, 0, 0, 4, 0x12, 0x34, 0xff, 0xff]);
  assert.throws(() => encodeResizeFrame(0, 80));
  assert.throws(() => encodeResizeFrame(24, 70000));
  const [one] = encodeDataFrames("ls\n");
  assert.deepEqual([...(one ?? [])], [0, 0, 0, 0, 3, 0x6c, 0x73, 0x0a]);
  const frames = encodeDataFrames(new Uint8Array(10_000));
  assert.deepEqual(
    frames.map((f) => [f[0], f.readUInt32BE(1), f.length]),
    [
      [0, 4096, 4101],
      [0, 4096, 4101],
      [0, 1808, 1813],
    ],
  );
  assert.deepEqual(encodeDataFrames(""), []);
});

test("upgrade request and response head parsing", () => {
  const req = buildUpgradeRequest(
    "/v1/sandboxes/sb-1/shell",
    "h:8080",
    new Headers({ "X-Api-Key": "k", "Content-Length": "9" }),
  );
  assert.equal(
    req,
    "POST /v1/sandboxes/sb-1/shell HTTP/1.1\r\nHost: h:8080\r\nx-api-key: k\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\nContent-Length: 0\r\n\r\n",
  );
  assert.equal(parseResponseHead(Buffer.from("HTTP/1.1 101 Switching")), undefined);
  const head = parseResponseHead(Buffer.from(`${SWITCH}extra`));
  assert.equal(head?.status, 101);
  assert.equal(head?.headers.get("upgrade"), "tcp-tunnel");
  assert.equal(Buffer.from(`${SWITCH}extra`).subarray(head?.bodyStart).toString(), "extra");
  assert.throws(() => parseResponseHead(Buffer.from("SSH-2.0-x\r\n\r\n")));
});

test("shell: handshake, bytes sent with the 101 are kept, resize-first framing, data frames, close", async () => {
  const frames: [number, Buffer][] = [];
  let serverSawEnd = false;
  const { url, seen } = await upgradeServer((_req, socket) => {
    // The prompt travels in the same packet as the 101.
    socket.write(`${SWITCH}WELCOME$ `);
    socket.on(
      "data",
      frameReader((type, payload) => {
        frames.push([type, Buffer.from(payload)]);
        if (type === 0) socket.write(`echo:${payload.length}:${payload.subarray(0, 8).toString()}|`);
      }),
    );
    socket.on("end", () => {
      serverSawEnd = true;
      socket.end();
    });
  });
  const sb = sandboxFor(url);
  const shell = await sb.shell({ rows: 30, cols: 100 });
  const out: string[] = [];
  // Subscribing after the handshake still sees the prompt.
  await new Promise((r) => setTimeout(r, 30));
  shell.onData((c) => out.push(c.toString()));
  shell.write("ls -la\n");
  shell.write(Buffer.alloc(5000, 0x61));
  shell.resize(50, 120);
  for (let i = 0; i < 200 && frames.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
  shell.close();
  await shell.closed;
  assert.equal(serverSawEnd, true);
  assert.deepEqual(
    frames.map(([t, p]) => [t, p.length]),
    [
      [1, 4],
      [0, 7],
      [0, 4096],
      [0, 904],
      [1, 4],
    ],
  );
  assert.deepEqual([...(frames[0]?.[1] ?? [])], [0, 30, 0, 100]);
  assert.deepEqual([...(frames[4]?.[1] ?? [])], [0, 50, 0, 120]);
  assert.equal(out.join(""), "WELCOME$ echo:7:ls -la\n|echo:4096:aaaaaaaa|echo:904:aaaaaaaa|");
  const req = seen[0];
  assert.equal(req?.method, "POST");
  assert.equal(req?.url, "/v1/sandboxes/sb-up/shell");
  assert.equal(req?.headers["x-api-key"], "skp_upgrade_key");
  assert.equal(req?.headers.upgrade, "tcp-tunnel");
  assert.equal(req?.headers["content-length"], "0");
});

test("shell: stdin/stdout streams and server-side end", async () => {
  const { PassThrough } = await import("node:stream");
  const { url } = await upgradeServer((_req, socket) => {
    socket.write(SWITCH);
    socket.on(
      "data",
      frameReader((type, payload) => {
        if (type === 0 && payload.toString() === "exit\n") socket.end("bye\r\n");
        else if (type === 0) socket.write(payload);
      }),
    );
  });
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const chunks: Buffer[] = [];
  stdout.on("data", (c: Buffer) => chunks.push(c));
  const shell = await sandboxFor(url).shell({ stdin, stdout });
  stdin.write("pwd\n");
  await new Promise((r) => setTimeout(r, 30));
  stdin.write("exit\n");
  await shell.closed;
  assert.equal(Buffer.concat(chunks).toString(), "pwd\nbye\r\n");
});

test("upgrade refused: typed error from the status and JSend body", async () => {
  const { url } = await upgradeServer((req, socket) => {
    if (req.url?.includes("/tunnel/")) {
      const body = "sandbox is paused";
      socket.end(
        `HTTP/1.1 409 Conflict\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      return;
    }
    const body = JSON.stringify({ status: "fail", data: "sandbox not found" });
    socket.end(
      `HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Request-Id: rid-up\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
  const sb = sandboxFor(url);
  const err = await sb.shell().catch((e: unknown) => e);
  assert.ok(err instanceof CreateosSandboxNotFoundError);
  assert.equal(err.requestId, "rid-up");
  assert.match(err.message, /sandbox not found/);
  const err2 = await sb.openTunnelSocket(22).catch((e: unknown) => e);
  assert.ok(err2 instanceof CreateosSandboxValidationError);
  assert.match(err2.message, /sandbox is paused/);
  await assert.rejects(sb.openTunnelSocket(0));
});

test("openTunnelSocket: raw duplex with the early banner intact", async () => {
  const { url, seen } = await upgradeServer((_req, socket) => {
    socket.write(`${SWITCH}SSH-2.0-OpenSSH_9\r\n`);
    socket.on("data", (d: Buffer) => socket.write(d));
  });
  const sock = await sandboxFor(url).openTunnelSocket(22);
  const got: Buffer[] = [];
  sock.on("data", (d: Buffer) => got.push(d));
  sock.write("ping");
  for (let i = 0; i < 100 && Buffer.concat(got).length < 21; i++) await new Promise((r) => setTimeout(r, 10));
  sock.destroy();
  assert.equal(Buffer.concat(got).toString(), "SSH-2.0-OpenSSH_9\r\nping");
  assert.equal(seen[0]?.url, "/v1/sandboxes/sb-up/tunnel/22");
});

test("tunnel: one upgrade per local connection, half-close honoured both ways", async () => {
  const { url, seen } = await upgradeServer((_req, socket) => {
    socket.write(SWITCH);
    // Guest service that answers only after the client's FIN (needs half-close to work).
    const parts: Buffer[] = [];
    socket.on("data", (d: Buffer) => parts.push(d));
    socket.on("end", () => {
      socket.write(`got:${Buffer.concat(parts).toString()}`);
      setTimeout(() => socket.end(), 20);
    });
  });
  const sb = sandboxFor(url);
  const tunnel = await sb.tunnel(8080);
  assert.ok(tunnel.port > 0);
  assert.equal(tunnel.host, "127.0.0.1");
  const roundTrip = (msg: string) =>
    new Promise<string>((resolve, reject) => {
      const c = net.connect({ port: tunnel.port, host: "127.0.0.1", allowHalfOpen: true });
      const got: Buffer[] = [];
      c.on("data", (d: Buffer) => got.push(d));
      c.on("end", () => {
        c.end();
        resolve(Buffer.concat(got).toString());
      });
      c.on("error", reject);
      c.end(msg);
    });
  const [a, b] = await Promise.all([roundTrip("hello"), roundTrip("world")]);
  assert.equal(a, "got:hello");
  assert.equal(b, "got:world");
  assert.equal(seen.length, 2);
  assert.ok(seen.every((r) => r.url === "/v1/sandboxes/sb-up/tunnel/8080"));
  await tunnel.close();
  await assert.rejects(
    new Promise((resolve, reject) => {
      const c = net.connect({ port: tunnel.port, host: "127.0.0.1" });
      c.on("connect", () => {
        c.destroy();
        resolve(undefined);
      });
      c.on("error", reject);
    }),
  );
});

test("tunnel: a refused upgrade drops that local connection and reports it", async () => {
  const { url } = await upgradeServer((_req, socket) => {
    socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  });
  const errors: Error[] = [];
  const tunnel = await sandboxFor(url).tunnel(5432, { onError: (e) => errors.push(e) });
  await new Promise<void>((resolve) => {
    const c = net.connect({ port: tunnel.port, host: "127.0.0.1" });
    c.on("close", () => resolve());
    c.on("error", () => undefined);
  });
  await tunnel.close();
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof CreateosSandboxNotFoundError);
});
