/**
 * The host-daemon wire against a real listening server: a scripted daemon behind `createHostdServer`,
 * driven by `RemoteHostDaemon`. Covers auth, every kind of exchange, errors, cancellation, backpressure,
 * an unreachable or hung host, TLS and unix sockets.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { request } from "node:http";
import { type Server, createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { type HostdError, RemoteHostDaemon } from "@createos-sandbox/protocol";
import { run } from "../sys/index.js";
import { ScriptedDaemon } from "./scripted.js";
import { createHostdServer, listenHostd } from "./serve.js";

const TOKEN = "test-token-0123456789abcdef";
const code = (e: unknown) => (e as HostdError).code;
const spec = (id: string) => ({
  sandbox_id: id,
  hostname: id,
  image: "debian:12",
  vcpu: 1,
  mem_mib: 256,
  disk_mib: 1024,
  envs: { A: "1" },
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rawStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/`, { headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once("error", reject);
    req.end();
  });
}

describe("host daemon over HTTP", () => {
  const daemon = new ScriptedDaemon();
  const server = createHostdServer(daemon, { token: TOKEN });
  let url = "";
  let remote: RemoteHostDaemon;

  before(async () => {
    url = await listenHostd(server, "127.0.0.1:0");
    remote = new RemoteHostDaemon(url, { token: TOKEN });
    await remote.create(spec("a"));
  });
  after(async () => {
    await remote.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test("every request without the right token is 401, a plain GET / and an upgrade included", async () => {
    assert.equal(await rawStatus(url), 401);
    assert.equal(await rawStatus(url, { authorization: "Bearer nope" }), 401);
    assert.equal(await rawStatus(url, { authorization: `Bearer ${TOKEN}x` }), 401);
    assert.equal(await rawStatus(url, { connection: "Upgrade", upgrade: "createos-hostd-stream/1" }), 401);
    assert.equal(await rawStatus(url, { authorization: `Bearer ${TOKEN}` }), 404);
    const wrong = new RemoteHostDaemon(url, { token: "wrong-token-0123456789" });
    await assert.rejects(wrong.info(), (e) => code(e) === "unauthorized");
    await assert.rejects(wrong.exec("a", { argv: ["x"] }), (e) => code(e) === "unauthorized");
    await wrong.close();
  });

  test("calls carry their arguments and results; engine errors keep their code", async () => {
    assert.equal((await remote.info()).id, "scripted");
    assert.deepEqual(daemon.calls.find((c) => c.method === "create")?.args, [spec("a")]);
    await assert.rejects(
      remote.create(spec("a")),
      (e) => code(e) === "conflict" && /exists/.test((e as Error).message),
    );
    await assert.rejects(remote.pause("nope"), (e) => code(e) === "not_found");
    const snap = await remote.pause("a");
    assert.equal(snap.snapshot_id, "s-a");
    const forked = await remote.fork(snap, spec("b"), { start_paused: true });
    assert.equal(forked.snapshot?.sandbox_id, "b");
    assert.deepEqual(daemon.calls.at(-1)?.args, [snap, spec("b"), { start_paused: true }]);
    await remote.resume(snap, spec("a"));
    assert.deepEqual(
      (await remote.list()).map((v) => v.sandbox_id),
      ["a"],
    );
    await remote.resizeDisk("a", 2048);
    assert.equal(daemon.vms.get("a")?.disk_mib, 2048);
    const mount = {
      disk_id: "disk_1",
      mount_path: "/mnt/d",
      bucket: "b",
      endpoint: "http://s3.test",
      access_key: "ak",
      secret_key: "sk",
    };
    await remote.mountDisk("a", mount);
    assert.deepEqual(daemon.calls.at(-1), { method: "mountDisk", args: [{ id: "a", mount_path: "/mnt/d" }] });
    await assert.rejects(remote.mountDisk("zz", mount), (e) => code(e) === "not_found");
    assert.deepEqual(await remote.diskStatus("a"), []);
    await remote.setDiskCredentials("disk_1", "ak2", "sk2");
    assert.deepEqual(daemon.calls.at(-1), { method: "setDiskCredentials", args: [{ diskId: "disk_1" }] });
    await remote.unmountDisk("a", "/mnt/d");
    assert.deepEqual(daemon.calls.at(-1), {
      method: "unmountDisk",
      args: [{ id: "a", mountPath: "/mnt/d" }],
    });
    await remote.setEgress("a", ["pypi.org", "1.1.1.1:53"]);
    assert.deepEqual(daemon.vms.get("a")?.egress, ["pypi.org", "1.1.1.1:53"]);
    await remote.setBandwidth("a", 4096);
    assert.equal(daemon.vms.get("a")?.bandwidth_remaining_bytes, 4096);
    daemon.usage.set("a", { egress_bytes: 10, ingress_bytes: 20, denied_packets: 3 });
    const refused = { ip: "203.0.113.9", proto: "tcp", port: 22, expires_in_s: 598 };
    daemon.recentDenied.set("a", [refused]);
    assert.deepEqual(await remote.takeNetUsage("a"), {
      egress_bytes: 10,
      ingress_bytes: 20,
      denied_packets: 3,
      recent_denied: [refused],
    });
    await assert.rejects(remote.setEgress("nope", []), (e) => code(e) === "not_found");
  });

  test("ensureImage streams progress and failures", async () => {
    const seen: number[] = [];
    await remote.ensureImage("debian:12", (p) => seen.push(p.fraction ?? -1));
    assert.deepEqual(seen, [0.5, 1]);
    await assert.rejects(remote.ensureImage("nope"), (e) => code(e) === "bad_request");
  });

  test("exec: stdout, stderr, exit code, stdin as a Buffer and as a stream", async () => {
    let out = "";
    let err = "";
    const ev = {
      onStdout: (c: Buffer) => {
        out += c;
      },
      onStderr: (c: Buffer) => {
        err += c;
      },
    };
    assert.equal(
      (await remote.exec("a", { argv: ["echo-stdin"], stdin: Buffer.from("hi there") }, ev)).exit_code,
      0,
    );
    assert.equal(out, "hi there");
    out = "";
    const big = Buffer.alloc(3 << 20, 1);
    await remote.exec(
      "a",
      { argv: ["echo-stdin"], stdin: Readable.from([big.subarray(0, 1 << 20), big.subarray(1 << 20)]) },
      ev,
    );
    assert.equal(out.length, big.length);
    const r = await remote.exec("a", { argv: ["fail"], env: { X: "y" }, cwd: "/tmp" }, ev);
    assert.equal(r.exit_code, 3);
    assert.equal(err, "bad\n");
    assert.deepEqual(daemon.calls.at(-1)?.args, [
      { argv: ["fail"], env: { X: "y" }, cwd: "/tmp", stdin: undefined },
    ]);
    await assert.rejects(remote.exec("zz", { argv: ["x"] }), (e) => code(e) === "not_found");
  });

  test("requests too large for the upgrade header go as the first frame, for exec and PTY alike", async () => {
    const env = { BIG: "x".repeat(20_000) };
    const r = await remote.exec("a", { argv: ["fail"], env });
    assert.equal(r.exit_code, 3);
    assert.equal((daemon.calls.at(-1)?.args[0] as { env: { BIG: string } }).env.BIG.length, 20_000);
    await assert.rejects(remote.exec("zz", { argv: ["x"], env }), (e) => code(e) === "not_found");
    const pty = await remote.openPty("a", { rows: 5, cols: 7, env });
    pty.stream.end();
    assert.deepEqual(await pty.exited, { exit_code: 7 });
    assert.deepEqual(daemon.resizes.at(-1), [5, 7]);
    await assert.rejects(remote.openPty("zz", { rows: 1, cols: 1, env }), (e) => code(e) === "not_found");
  });

  test("aborting an exec kills it and still answers its result", async () => {
    const ac = new AbortController();
    const p = remote.exec("a", { argv: ["sleep"] }, {}, ac.signal);
    await sleep(100);
    ac.abort();
    const r = await p;
    assert.equal(r.signal, "SIGKILL");
  });

  test("files: write, read back, missing file, too large", async () => {
    const blob = Buffer.from([0, 1, 2, 255, 10, 13]);
    assert.deepEqual(await remote.writeFile("a", "/x/bin", Readable.from([blob]), 0o755), { bytes: 6 });
    const { stat, body } = await remote.readFile("a", "/x/bin");
    assert.deepEqual(stat, { size: 6, mode: 0o755 });
    const parts: Buffer[] = [];
    for await (const c of body) parts.push(c as Buffer);
    assert.deepEqual(Buffer.concat(parts), blob);
    await assert.rejects(remote.readFile("a", "/missing"), (e) => code(e) === "file_not_found");
    const huge = Readable.from(
      (function* () {
        for (let i = 0; i < 40; i++) yield Buffer.alloc(1 << 20);
      })(),
    );
    await assert.rejects(remote.writeFile("a", "/huge", huge), (e) => code(e) === "too_large");
  });

  test("a download the reader does not read stops being produced (backpressure)", async () => {
    daemon.produced = 0;
    const { body } = await remote.readFile("a", "/big");
    body.pause();
    await sleep(500);
    const stalled = daemon.produced;
    assert.ok(stalled < 24 << 20, `produced ${stalled >> 20} MiB of 64 while nobody read`);
    let n = 0;
    for await (const c of body) n += (c as Buffer).length;
    assert.equal(n, 64 << 20);
  });

  test("an exec whose consumer holds its output stops being produced (backpressure), and abort ends it", async () => {
    daemon.produced = 0;
    const ac = new AbortController();
    let got = 0;
    const p = remote.exec(
      "a",
      { argv: ["zeros"] },
      {
        onStdout: (c) => {
          got += c.length;
          return new Promise(() => {});
        },
      },
      ac.signal,
    );
    await sleep(500);
    const stalled = daemon.produced;
    assert.ok(stalled < 24 << 20, `produced ${stalled >> 20} MiB of 64 while the consumer held it`);
    assert.ok(got > 0 && got <= stalled);
    ac.abort();
    assert.equal((await p).signal, "SIGKILL");
    // A consumer that takes each chunk at once gets all of it.
    let all = 0;
    const ok = await remote.exec(
      "a",
      { argv: ["zeros"] },
      {
        onStdout: (c) => {
          all += c.length;
        },
      },
    );
    assert.equal(ok.exit_code, 0);
    assert.equal(all, 64 << 20);
  });

  test("pty: output, resize, input end, exit status", async () => {
    const pty = await remote.openPty("a", { rows: 24, cols: 80 });
    pty.resize(40, 120);
    pty.stream.write("ls\n");
    const got = await new Promise<string>((r) => pty.stream.once("data", (c: Buffer) => r(c.toString())));
    assert.equal(got, "ls\n");
    pty.stream.end();
    assert.deepEqual(await pty.exited, { exit_code: 7 });
    assert.deepEqual(daemon.resizes.slice(-2), [
      [24, 80],
      [40, 120],
    ]);
    await assert.rejects(remote.openPty("zz", { rows: 1, cols: 1 }), (e) => code(e) === "not_found");
  });

  test("tunnel: bytes both ways, half-close, refusals", async () => {
    const s = await remote.connectTcp("a", 7);
    s.end(Buffer.from("ping"));
    const parts: Buffer[] = [];
    for await (const c of s) parts.push(c as Buffer);
    assert.equal(Buffer.concat(parts).toString(), "ping");
    await assert.rejects(remote.connectTcp("a", 8), (e) => code(e) === "conflict");
  });

  test("events reach subscribers until they unsubscribe", async () => {
    const got: string[] = [];
    const off = remote.onEvent((e) => got.push(e.sandbox_id));
    await sleep(200);
    daemon.emit({ type: "activity", sandbox_id: "a" });
    await sleep(100);
    off();
    daemon.emit({ type: "activity", sandbox_id: "b" });
    await sleep(100);
    assert.deepEqual(got, ["a"]);
  });
});

describe("an unreachable host daemon", () => {
  test("a refused connection fails at once with `unreachable`", async () => {
    const srv = createNetServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    await new Promise((r) => srv.close(r));
    const remote = new RemoteHostDaemon(`http://127.0.0.1:${port}`, { token: TOKEN });
    const t0 = Date.now();
    await assert.rejects(remote.info(), (e) => code(e) === "unreachable");
    assert.ok(Date.now() - t0 < 2000);
    await remote.close();
  });

  test("a host that accepts but never answers fails with `unreachable` after the idle timeout", async () => {
    const held: import("node:net").Socket[] = [];
    const srv: Server = createNetServer((s) => held.push(s));
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    const remote = new RemoteHostDaemon(`http://127.0.0.1:${port}`, { token: TOKEN, idleTimeoutMs: 300 });
    await assert.rejects(remote.create(spec("x")), (e) => code(e) === "unreachable");
    await assert.rejects(remote.exec("x", { argv: ["true"] }), (e) => code(e) === "unreachable");
    await remote.close();
    for (const s of held) s.destroy();
    await new Promise((r) => srv.close(r));
  });
});

describe("TLS and unix sockets", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "csb-hostd-tls-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("https with a self-signed certificate the client trusts", async () => {
    const key = join(dir, "key.pem");
    const cert = join(dir, "cert.pem");
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ]);
    const pem = { key: await readFile(key), cert: await readFile(cert) };
    const server = createHostdServer(new ScriptedDaemon(), { token: TOKEN, tls: pem });
    const url = await listenHostd(server, "127.0.0.1:0");
    assert.match(url, /^https:/);
    const trusted = new RemoteHostDaemon(url, { token: TOKEN, ca: pem.cert });
    assert.equal((await trusted.info()).id, "scripted");
    const untrusted = new RemoteHostDaemon(url, { token: TOKEN });
    await assert.rejects(
      untrusted.info(),
      (e) => code(e) === "unreachable" && /certificate/i.test((e as Error).message),
    );
    await trusted.close();
    await untrusted.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test("unix socket", async () => {
    const d = new ScriptedDaemon();
    await d.create(spec("u"));
    const server = createHostdServer(d, { token: TOKEN });
    const url = await listenHostd(server, `unix:${join(dir, "hostd.sock")}`);
    const remote = new RemoteHostDaemon(url, { token: TOKEN });
    let out = "";
    await remote.exec(
      "u",
      { argv: ["echo-stdin"], stdin: Buffer.from("via unix") },
      {
        onStdout: (c) => {
          out += c;
        },
      },
    );
    assert.equal(out, "via unix");
    await remote.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
});
