/**
 * The two edge listeners on a real VM: the ingress proxy (curl to the SDK's previewUrl(), WebSocket, SSE,
 * refusals, wake on request) and the SSH gateway (OpenSSH client: a command, `-L`, `-J` to the guest's
 * sshd, refusals). One devbox:1 sandbox serves every assertion; the published SDK drives the API.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CreateosSandboxClient, type Sandbox } from "@nodeops-createos/sandbox";
import ssh2, { type ParsedKey } from "ssh2";
import WebSocket from "ws";
import { GUEST_SERVERS } from "./edge-guest.js";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, cleanup } from "./helpers.js";

const pexec = promisify(execFile);

/** curl's status code and body; `*.localhost` resolves to loopback in curl itself (no DNS, no /etc/hosts). */
export async function curl(url: string, extra: string[] = []): Promise<{ code: number; body: string }> {
  const { stdout } = await pexec("curl", ["-s", "-m", "90", "-w", "\n%{http_code}", ...extra, url]);
  const at = stdout.lastIndexOf("\n");
  return { code: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) };
}

describe("ingress proxy and SSH gateway on a real VM", { timeout: 30 * 60_000 }, () => {
  let s: ServerProc;
  let client: CreateosSandboxClient;
  let sb: Sandbox;
  let ingressPort = 0;
  let sshPort = 0;
  const keys = mkdtempSync(join(tmpdir(), "csb-edge-keys-"));
  const key = (name: string) => join(keys, name);

  before(async () => {
    s = await startEngineServer({
      CREATEOS_SANDBOX_AUTO_PAUSE_MIN_SECONDS: "2",
      CREATEOS_SANDBOX_SCHEDULER_INTERVAL_MS: "500",
      CREATEOS_SANDBOX_INGRESS_RESPONSE_TIMEOUT_MS: "3000",
    });
    ingressPort = Number(
      /"msg":"ingress listening".*"url":"http:\/\/127\.0\.0\.1:(\d+)"/.exec(
        await s.waitLog(/"msg":"ingress listening"/),
      )![1],
    );
    sshPort = Number(/"port":(\d+)/.exec(await s.waitLog(/"msg":"ssh gateway listening"/))![1]);
    for (const k of ["a", "b", "wrong"])
      await pexec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key(k)]);
    client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    sb = await client.createSandbox({
      shape: "s-1vcpu-256mb",
      rootfs: "devbox:1",
      name: "edge-box",
      ingress_enabled: true,
      ssh_pubkeys: [readFileSync(`${key("a")}.pub`, "utf8").trim()],
    });
    await sb.files.upload("/tmp/edge.py", GUEST_SERVERS);
    await sb.files.upload("/tmp/www/index.html", "hello from the guest\n");
    const bg = (cmd: string) => sb.runCommand("sh", ["-c", `setsid nohup ${cmd} >/dev/null 2>&1 &`]);
    await bg("python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www");
    await bg("python3 /tmp/edge.py");
  });

  after(async () => {
    if (s) await destroyAll(s, [s.adminKey]);
    await s?.stop();
    if (s) cleanup(s.dataDir);
    cleanup(keys);
  });

  /** The URL SDK 0.7.1 builds for a guest port. */
  const url = (port: number, path = "/") => `${sb.previewUrl(port)}${path}`;

  async function untilServed(port: number): Promise<{ code: number; body: string }> {
    for (let i = 0; ; i++) {
      const r = await curl(url(port));
      if (r.code !== 502 || i > 100) return r;
      await new Promise((res) => setTimeout(res, 300));
    }
  }

  it("the template has the literal <port>; previewUrl() reaches python3 -m http.server in the guest", async () => {
    const tpl = sb.data.ingress_url_template!;
    assert.equal(tpl, `http://${sb.id.slice(3)}-<port>.localhost:${ingressPort}`);
    assert.equal((await client.getSandbox(sb.id)).data.ingress_url_template, tpl, "in GET as well");
    const r = await untilServed(8000);
    assert.equal(r.code, 200, r.body);
    assert.equal(r.body, "hello from the guest\n");
    // The sb- spelling of the label routes to the same sandbox.
    const alt = await curl(url(8000).replace(`//${sb.id.slice(3)}`, `//${sb.id}`));
    assert.equal(alt.body, "hello from the guest\n");
  });

  it("the guest sees X-Forwarded-For/Proto/Host and the original Host", async () => {
    await untilServed(8001);
    const r = await curl(url(8001, "/headers"), ["-H", "X-Forwarded-For: 203.0.113.9"]);
    assert.equal(r.code, 200);
    const host = new URL(url(8001)).host;
    assert.match(r.body, new RegExp(`^Host: ${host.replace(/\./g, "\\.")}$`, "mi"));
    assert.match(r.body, /^X-Forwarded-For: 203\.0\.113\.9, 127\.0\.0\.1$/m);
    assert.match(r.body, /^X-Forwarded-Proto: http$/m);
    assert.match(r.body, new RegExp(`^X-Forwarded-Host: ${host.replace(/\./g, "\\.")}$`, "m"));
  });

  it("server-sent events arrive one by one, not at the end", async () => {
    const u = new URL(url(8001, "/sse"));
    const arrivals: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const req = request(
        { host: "127.0.0.1", port: ingressPort, path: u.pathname, headers: { host: u.host } },
        (res) => {
          assert.equal(res.statusCode, 200);
          assert.equal(res.headers["content-type"], "text/event-stream");
          let buf = "";
          res.on("data", (c: Buffer) => {
            buf += c.toString();
            while (buf.includes("\n\n")) {
              arrivals.push(Date.now() - t0);
              buf = buf.slice(buf.indexOf("\n\n") + 2);
            }
          });
          res.on("end", () => resolve());
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(arrivals.length, 3, `events: ${arrivals}`);
    // The guest sleeps 400 ms between events: buffered delivery would bunch them at the end.
    assert.ok(arrivals[2]! - arrivals[0]! >= 600, `arrivals ms: ${arrivals}`);
  });

  it("bytes that come in through the proxy are counted in bandwidth_ingress_bytes", async () => {
    const ingressBytes = async () => {
      const r = await fetch(`${s.url}/v1/sandboxes/${sb.id}/bandwidth`, {
        headers: { "x-api-key": s.adminKey },
      });
      return ((await r.json()) as { data: { ingress_bytes: number } }).data.ingress_bytes;
    };
    const before = await ingressBytes();
    const file = join(keys, "upload.bin");
    writeFileSync(file, Buffer.alloc(200_000, 7));
    const r = await curl(url(8001, "/upload"), ["--data-binary", `@${file}`]);
    assert.equal(r.body, "got 200000");
    let now = before;
    for (let i = 0; i < 50 && now < before + 200_000; i++) {
      await new Promise((res) => setTimeout(res, 100));
      now = await ingressBytes();
    }
    // The body and the request head; nothing like the response is counted in.
    assert.ok(now >= before + 200_000 && now < before + 202_000, `${before} → ${now}`);
  });

  it("a WebSocket echo in the guest answers through the proxy, both ways", async () => {
    await untilServed(8001);
    const u = new URL(url(8002));
    const ws = new WebSocket(`ws://127.0.0.1:${ingressPort}/`, { headers: { host: u.host } });
    await new Promise((res, rej) => {
      ws.once("open", res);
      ws.once("error", rej);
    });
    const got: string[] = [];
    const done = new Promise<void>((res) => {
      ws.on("message", (m) => {
        got.push(m.toString());
        if (got.length === 2) res();
      });
    });
    ws.send("one");
    ws.send("x".repeat(300));
    await done;
    assert.deepEqual(got, ["echo: one", `echo: ${"x".repeat(300)}`]);
    ws.close();
  });

  it("plain-words refusals: nothing listening 502, no answer 504, unknown or disabled 404", async () => {
    const none = await curl(url(8999));
    assert.equal(none.code, 502);
    assert.equal(none.body, `nothing is listening on port 8999 in sandbox ${sb.id}\n`);
    const hang = await curl(url(8003));
    assert.equal(hang.code, 504);
    assert.equal(hang.body, `sandbox ${sb.id} did not answer on port 8003 within 3 s\n`);
    const unknown = await curl(url(8000).replace(sb.id.slice(3, 10), "0000000"));
    assert.equal(unknown.code, 404);
    assert.match(unknown.body, /the sandbox does not exist or its ingress is off/);
    await sb.setIngress(false);
    assert.equal(sb.data.ingress_url_template, undefined, "no template while disabled");
    const off = await curl(`http://${sb.id.slice(3)}-8000.localhost:${ingressPort}/`);
    assert.equal(off.code, 404);
    await sb.setIngress(true);
    assert.equal((await curl(url(8000))).code, 200);
  });

  it("requests count as activity; a paused sandbox wakes on a request and serves it", async () => {
    await sb.setAutoPause(2);
    // Requests every 500 ms keep a 2 s idle timeout from firing.
    for (let i = 0; i < 10; i++) {
      assert.equal((await curl(url(8000))).code, 200);
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.equal((await client.getSandbox(sb.id)).data.status, "running");
    await sb.waitUntilPaused({ timeoutMs: 60_000 });
    // Concurrent requests share one resume.
    const t0 = Date.now();
    const [a, b] = await Promise.all([curl(url(8000)), curl(url(8001, "/headers"))]);
    const firstByteMs = Date.now() - t0;
    assert.equal(a.code, 200, a.body);
    assert.equal(a.body, "hello from the guest\n");
    assert.equal(b.code, 200, b.body);
    const wakes = s.logs.filter((l) => l.includes('"msg":"ingress wakes sandbox"') && l.includes(sb.id));
    assert.equal(wakes.length, 1, "one resume for both requests");
    process.stdout.write(`# woken request answered in ${firstByteMs} ms\n`);
    await sb.setAutoPause(null);
    assert.equal((await client.getSandbox(sb.id)).data.status, "running");
  });

  it("a client that leaves while its request wakes the sandbox leaves no stream open", async () => {
    assert.equal((await untilServed(8000)).code, 200);
    await sb.pause();
    await sb.waitUntilPaused({ timeoutMs: 60_000 });
    const gone = await curl(url(8000), ["-m", "0.2"]).catch((e: { code?: number }) => ({ code: e.code }));
    assert.equal(gone.code, 28, "curl gave up (timeout) before the answer");
    await sb.waitUntilRunning({ timeoutMs: 60_000 });
    const open = async () => {
      const r = await fetch(`${s.url}/metrics`, { headers: { "x-api-key": s.adminKey } });
      return Number(/^createos_open_streams (\d+)/m.exec(await r.text())?.[1]);
    };
    let n = await open();
    for (let i = 0; i < 50 && n !== 0; i++) {
      await new Promise((res) => setTimeout(res, 100));
      n = await open();
    }
    assert.equal(n, 0);
    assert.equal((await curl(url(8000))).code, 200);
  });

  /** OpenSSH's client with a throwaway key and no known-hosts file; never asks anything. */
  const sshOpts = (k: string) => [
    "-i",
    key(k),
    ...["IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes", "StrictHostKeyChecking=no"].flatMap(
      (o) => ["-o", o],
    ),
    ...["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"],
  ];

  async function ssh(
    k: string,
    user: string,
    cmd: string[],
  ): Promise<{ code: number; out: string; err: string }> {
    const args = [...sshOpts(k), "-n", "-p", String(sshPort), `${user}@127.0.0.1`, ...cmd];
    return pexec("ssh", args, { timeout: 120_000 }).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { code?: number; stdout?: string; stderr?: string }) => ({
        code: e.code ?? -1,
        out: e.stdout ?? "",
        err: e.stderr ?? "",
      }),
    );
  }

  it("ssh <id>@gateway runs a command through the agent: stdout, stderr and exit code apart", async () => {
    const r = await ssh("a", sb.id, ["echo out; echo err >&2; hostname; exit 7"]);
    assert.equal(r.code, 7, r.err);
    assert.equal(r.out, `out\n${(await sb.runCommand("hostname")).result.stdout}`);
    assert.equal(r.err, "err\n");
    // The name works too when one sandbox of that name lists the key.
    const byName = await ssh("a", "edge-box", ["id -un"]);
    assert.equal(byName.out, "root\n", byName.err);
    await s.waitLog(new RegExp(`"msg":"ssh login".*"sandbox_id":"${sb.id}"`));
  });

  it("a listed key offered but never signed with is acceptable and no login (no `ssh login` line)", async () => {
    const logins = () => s.logs.filter((l) => l.includes('"msg":"ssh login"')).length;
    const before = logins();
    const pub = ssh2.utils.parseKey(readFileSync(`${key("a")}.pub`, "utf8"));
    assert.ok(!(pub instanceof Error));
    // An agent that names the key and cannot sign: the client probes (the gateway says "acceptable"), then
    // has no signature to send — what anyone holding only the public half can do.
    class ProbeOnly extends ssh2.BaseAgent {
      getIdentities(cb: (e: Error | undefined, keys?: ParsedKey[]) => void): void {
        cb(undefined, [Array.isArray(pub) ? pub[0]! : (pub as ParsedKey)]);
      }
      sign(_k: ParsedKey, _d: Buffer, _o: unknown, cb?: (e?: Error) => void): void {
        cb?.(new Error("this agent cannot sign"));
      }
    }
    const c = new ssh2.Client();
    const ended = new Promise<string>((resolve) => {
      c.on("ready", () => resolve("ready"));
      c.on("error", (e) => resolve(e.message));
    });
    c.connect({
      host: "127.0.0.1",
      port: sshPort,
      username: sb.id,
      agent: new ProbeOnly(),
      tryKeyboard: false,
    });
    const how = await ended;
    c.end();
    // It got as far as signing: the gateway found the key acceptable (PK_OK).
    assert.equal(how, "this agent cannot sign");
    await new Promise((r) => setTimeout(r, 1000)); // info lines reach stdout within 50 ms (log.ts)
    assert.equal(logins(), before, "a probe is not a login");
  });

  it("a key added with POST …/ssh-pubkeys logs in at once; a wrong key and an unknown id are refused", async () => {
    await sb.addSSHPubkeys([readFileSync(`${key("b")}.pub`, "utf8").trim()]);
    assert.equal((await ssh("b", sb.id, ["true"])).code, 0);
    const t0 = Date.now();
    const wrong = await ssh("wrong", sb.id, ["true"]);
    assert.equal(wrong.code, 255);
    assert.match(wrong.err, /Permission denied \(publickey\)/);
    const unknown = await ssh("a", "sb-00000000000000000000000000", ["true"]);
    assert.equal(unknown.code, 255);
    assert.match(unknown.err, /Permission denied/);
    assert.ok(Date.now() - t0 < 10_000, "refusals are fast");
    await s.waitLog(/"msg":"ssh refused".*"reason":"key not listed"/);
    await s.waitLog(/"msg":"ssh refused".*"reason":"unknown sandbox"/);
  });

  it("ssh -L forwards a local port to a guest HTTP port", async () => {
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, "127.0.0.1", () => r()));
    const local = (free.address() as AddressInfo).port;
    await new Promise<void>((r) => free.close(() => r()));
    const fwd: ChildProcess = spawn(
      "ssh",
      [...sshOpts("a"), "-N", "-L", `${local}:127.0.0.1:8000`, "-p", String(sshPort), `${sb.id}@127.0.0.1`],
      { stdio: "ignore" },
    );
    try {
      let r = { code: 0, body: "" };
      for (let i = 0; i < 100 && r.code !== 200; i++) {
        r = await curl(`http://127.0.0.1:${local}/`).catch(() => ({ code: 0, body: "" }));
        if (r.code !== 200) await new Promise((res) => setTimeout(res, 200));
      }
      assert.equal(r.body, "hello from the guest\n");
    } finally {
      fwd.kill();
    }
  });

  it("ssh -J <id>@gateway reaches the guest's own sshd with the same key", async () => {
    const cfg = join(keys, "config");
    writeFileSync(
      cfg,
      [
        "Host gw",
        "  HostName 127.0.0.1",
        `  Port ${sshPort}`,
        `  User ${sb.id}`,
        "Host *",
        `  IdentityFile ${key("a")}`,
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        "  BatchMode yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "",
      ].join("\n"),
    );
    const r = await pexec(
      "ssh",
      ["-F", cfg, "-n", "-J", "gw", "root@sandbox", "echo via-sshd $SSH_CONNECTION"],
      {
        timeout: 120_000,
      },
    );
    assert.match(r.stdout, /^via-sshd 127\.0\.0\.1 \d+ 127\.0\.0\.1 22$/m);
    const keysFile = (await sb.runCommand("cat", ["/root/.ssh/authorized_keys"])).result.stdout;
    assert.ok(
      keysFile.includes(
        readFileSync(`${key("a")}.pub`, "utf8")
          .trim()
          .split(" ")[1]!,
      ),
    );
  });

  it("createos sandbox shell --ssh with --sandbox-gateway adds the key and logs in through the gateway", async () => {
    await pexec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key("cli")]);
    const home = mkdtempSync(join(tmpdir(), "csb-edge-home-"));
    const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "cli", "bin", "createos.js");
    const args = [bin, "--sandbox-gateway", `127.0.0.1:${sshPort}`, "sandbox", "shell", "edge-box", "--ssh"];
    const cli = spawn(process.execPath, [...args, "-i", key("cli")], {
      env: { PATH: process.env.PATH!, HOME: home, CREATEOS_API_KEY: s.adminKey, CREATEOS_SANDBOX_URL: s.url },
    });
    let out = "";
    cli.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    cli.stderr!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    cli.stdin!.end("echo via-$((6*7)); exit 4\n");
    const code = await new Promise<number | null>((r) => cli.once("exit", (c) => r(c)));
    cleanup(home);
    assert.equal(code, 4, out);
    assert.match(out, /via-42/);
    const listed = (await client.getSandbox(sb.id)).data.ssh_pubkeys ?? [];
    assert.ok(listed.some((k) => k.includes(readFileSync(`${key("cli")}.pub`, "utf8").split(" ")[1]!)));
  });

  it("a paused sandbox is refused in plain words, not woken", async () => {
    await sb.pause();
    await sb.waitUntilPaused({ timeoutMs: 60_000 });
    const r = await ssh("a", sb.id, ["true"]);
    assert.equal(r.code, 1);
    assert.match(r.err, /paused sandbox; resume it first/);
    assert.equal((await client.getSandbox(sb.id)).data.status, "paused");
    await sb.resume();
    await sb.waitUntilRunning({ timeoutMs: 60_000 });
  });
});
