/**
 * The real server with the real engine, driven by the PUBLISHED SDK (@nodeops-createos/sandbox@0.7.1):
 * every SDK method this issue serves, plus shell/tunnel upgrades, access tokens, tenancy and auto-pause.
 * VMs are few and reused where that does not weaken a check.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  CreateosSandboxClient,
  CreateosSandboxNotFoundError,
  CreateosSandboxPermissionError,
  CreateosSandboxValidationError,
  type Sandbox,
} from "@nodeops-createos/sandbox";
import {
  destroyAll,
  frame,
  randomEd25519,
  resizeFrame,
  startEngineServer,
  upgrade,
} from "./engine-helpers.js";
import { ED25519, SANDBOX_ROUTES, type ServerProc, call, cleanup, newUser } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";

describe("published SDK against the real server and engine", { timeout: 30 * 60_000 }, () => {
  let s: ServerProc;
  let client: CreateosSandboxClient;
  let bobKey: string;
  let bob: CreateosSandboxClient;
  let sb: Sandbox;
  const toDestroy: Sandbox[] = [];

  before(async () => {
    s = await startEngineServer({
      CREATEOS_SANDBOX_AUTO_PAUSE_MIN_SECONDS: "2",
      CREATEOS_SANDBOX_SCHEDULER_INTERVAL_MS: "500",
      CREATEOS_SANDBOX_EXEC_HEARTBEAT_MS: "1000",
      CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0",
    });
    client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    bobKey = await newUser(s.dataDir, "bob");
    bob = new CreateosSandboxClient({ apiKey: bobKey, baseUrl: s.url, retry: false });
  });

  after(async () => {
    for (const x of toDestroy) await x.destroy().catch(() => undefined);
    for (const x of toDestroy) await x.waitUntilDestroyed({ timeoutMs: 30_000 }).catch(() => undefined);
    if (s) await destroyAll(s, [s.adminKey, bobKey]);
    await s?.stop();
    if (s) cleanup(s.dataDir);
  });

  it("health, readiness, catalog, hosts, whoami", async () => {
    assert.deepEqual(await client.healthz(), { up: true });
    const ready = await client.readyz();
    assert.equal(ready.ready, true);
    assert.equal(typeof ready.scheduler_last_ok_ms_ago, "number");
    const shapes = await client.listShapes();
    assert.ok(shapes.some((x) => x.id === SHAPE));
    const rootfs = await client.listRootfs();
    assert.ok(rootfs.rootfs.includes(rootfs.default));
    const hosts = await client.listHosts();
    assert.equal(hosts.length, 1);
    assert.equal(hosts[0]!.status, "active");
    const me = await client.whoami();
    assert.match(me.user_id, /^usr_/);
  });

  let netId = "";

  it("createSandbox is synchronous and answers a running sandbox", async () => {
    netId = (await client.networks.create({ name: "itest-net" })).id;
    const t0 = Date.now();
    sb = await client.createSandbox({
      shape: SHAPE,
      name: "itest-main",
      networks: [{ id: "itest-net" }],
      envs: { FOO: "bar", SECRET: "s3cr3t" },
      egress: ["example.com:443"],
      ssh_pubkeys: [ED25519],
    });
    toDestroy.push(sb);
    assert.match(sb.id, /^sb-[0-9a-z]{26}$/);
    assert.equal(sb.status, "running");
    assert.ok(sb.ip);
    assert.ok((sb.data.spawn_ms ?? 0) > 0 && (sb.data.spawn_ms ?? 0) <= Date.now() - t0 + 1);
    const view = (await client.getSandbox(sb.id)).data;
    assert.equal(view.status, "running");
    assert.equal(view.name, "itest-main");
    assert.deepEqual(view.envs?.sort(), ["FOO", "SECRET"]);
    assert.ok(!JSON.stringify(view).includes("s3cr3t"), "env values are never returned");
    assert.deepEqual(view.egress, ["example.com:443"]);
    assert.equal(view.shape, SHAPE);
    assert.equal(view.vcpu, 1);
    assert.equal(view.mem_mib, 256);
    assert.equal(view.disk_mib, 10240);
    assert.ok(view.running_at);
    for (const [k, v] of Object.entries(view)) assert.notEqual(v, null, `${k} is null`);
    // Duplicate live name → 400.
    await assert.rejects(
      client.createSandbox({ shape: SHAPE, name: "itest-main" }),
      CreateosSandboxValidationError,
    );
    const byIp = await client.getSandboxByIP(sb.ip!);
    assert.equal(byIp.id, sb.id);
    const listed = await client.listSandboxes({ status: "running" });
    assert.ok(listed.some((x) => x.id === sb.id));
  });

  it("networks, disks and templates through the SDK's namespaces", async () => {
    const net = await client.networks.get(netId);
    assert.deepEqual(
      net.members?.map((m) => m.sandbox_id),
      [sb.id],
    );
    assert.equal((await client.networks.list()).find((n) => n.id === netId)?.member_count, 1);
    await assert.rejects(client.networks.delete(netId), CreateosSandboxValidationError, "members remain");
    await sb.detachNetwork(netId);
    assert.deepEqual((await client.networks.get("itest-net")).members, []);
    await sb.attachNetwork("itest-net");
    await assert.rejects(bob.networks.get(netId), CreateosSandboxNotFoundError);
    assert.deepEqual(await sb.listDisks(), []);
    assert.deepEqual(await client.disks.list(), []);
    assert.deepEqual(await client.templates.list(), []);
    await assert.rejects(client.templates.get("nope"), CreateosSandboxNotFoundError);
  });

  it("runCommand: stdout, stderr, exit code, sandbox env; per-exec env only for declared keys", async () => {
    const r = await sb.runCommand("sh", ["-c", "echo $FOO; echo oops >&2; exit 3"]);
    assert.equal(r.result.stdout, "bar\n");
    assert.equal(r.result.stderr, "oops\n");
    assert.equal(r.result.exit_code, 3);
    assert.equal(typeof r.exec_ms, "number");
    const missing = await sb.runCommand("/no/such/binary");
    assert.ok(missing.result.error || missing.result.exit_code !== 0);
    const over = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: s.adminKey,
      body: { cmd: "sh", args: ["-c", "echo $FOO"], env: { FOO: "baz" } },
    });
    assert.equal(over.json.data.result.stdout, "baz\n");
    const undeclared = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: s.adminKey,
      body: { cmd: "true", env: { NOPE: "1" } },
    });
    assert.equal(undeclared.status, 400);
    assert.ok(undeclared.json.data.env);
    const stdin = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/exec`, {
      key: s.adminKey,
      body: { cmd: "cat", stdin: "from-stdin" },
    });
    assert.equal(stdin.json.data.result.stdout, "from-stdin");
  });

  it("streamCommand yields output frames, heartbeats and the exit; disconnect kills the command", async () => {
    const events: string[] = [];
    for await (const ev of sb.streamCommand("sh", ["-c", "echo one; sleep 1.5; echo two >&2; exit 4"])) {
      if (ev.type === "stdout" || ev.type === "stderr") events.push(`${ev.type}:${ev.data.trim()}`);
      else if (ev.type === "exit") events.push(`exit:${ev.exitCode}`);
      else if (ev.type === "heartbeat") events.push("hb");
    }
    assert.deepEqual(
      events.filter((e) => e !== "hb"),
      ["stdout:one", "stderr:two", "exit:4"],
    );
    assert.ok(events.includes("hb"), `expected a heartbeat during the quiet second: ${events}`);
    // A sleep with a unique duration is findable by its exact command line (the checker's own argv differs).
    const secs = 50_000 + Math.floor(Math.random() * 9999);
    for await (const ev of sb.streamCommand("sh", ["-c", `echo started; exec sleep ${secs}`])) {
      if (ev.type === "stdout") break;
    }
    const count = (n: number) =>
      `for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null | grep -c '^sleep ${n} $'`;
    // The detector itself finds a live sleep, so a later "0" means the process is gone, not a blind check.
    const probe = await sb.runCommand("sh", [
      "-c",
      `sleep ${secs + 1} & sleep 0.2; ${count(secs + 1)}; kill $!`,
    ]);
    assert.equal(probe.result.stdout.trim(), "1");
    let alive = "1";
    for (let i = 0; i < 20 && alive !== "0"; i++) {
      await new Promise((r) => setTimeout(r, 250));
      alive = (await sb.runCommand("sh", ["-c", count(secs)])).result.stdout.trim();
    }
    assert.equal(alive, "0", "the streamed command was killed when the client went away");
  });

  it("files: upload/download byte-exact, missing file 404, relative path 400", async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await sb.files.upload("/tmp/it/deep/blob.bin", data);
    const back = Buffer.from(await sb.files.download("/tmp/it/deep/blob.bin"));
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data));
    await assert.rejects(sb.files.download("/tmp/it/nope"), CreateosSandboxNotFoundError);
    await assert.rejects(sb.files.upload("relative/path", "x"), CreateosSandboxValidationError);
  });

  it("egress, bandwidth, ssh keys, auto-pause setting, resize", async () => {
    const eg = await sb.getEgress();
    assert.deepEqual([eg.id, eg.egress], [sb.id, ["example.com:443"]]);
    assert.deepEqual((await sb.setEgress(["1.1.1.0/24:443", "*.npmjs.org"])).egress, [
      "1.1.1.0/24:443",
      "*.npmjs.org",
    ]);
    await assert.rejects(sb.setEgress(["bad rule!"]), CreateosSandboxValidationError);
    // a private range the operator did not list as CREATEOS_SANDBOX_PRIVATE_EGRESS
    await assert.rejects(sb.setEgress(["10.0.0.0/8:443"]), CreateosSandboxValidationError);
    assert.deepEqual((await sb.setEgress(null)).egress, []);
    const bw = await sb.getBandwidth();
    // metered from the start: whatever the guest sent since it booted is counted
    assert.deepEqual(bw, {
      id: sb.id,
      quota_bytes: 10 * 1024 ** 3,
      used_bytes: bw.used_bytes,
      ingress_bytes: bw.ingress_bytes,
      remaining_bytes: 10 * 1024 ** 3 - bw.used_bytes,
      capped: false,
    });
    assert.equal((await sb.rechargeBandwidth(1000)).quota_bytes, 10 * 1024 ** 3 + 1000);
    await assert.rejects(sb.rechargeBandwidth(-5), CreateosSandboxValidationError);
    const other = randomEd25519();
    assert.deepEqual(await sb.addSSHPubkeys([ED25519, other, other]), { count: 2 });
    await assert.rejects(sb.addSSHPubkeys(["not a key"]), CreateosSandboxValidationError);
    await sb.setAutoPause(600);
    assert.equal(sb.data.auto_pause_after_seconds, 600);
    await sb.setAutoPause(null);
    assert.equal(sb.data.auto_pause_after_seconds, undefined);
    assert.ok(!("auto_pause_after_seconds" in sb.data));
    await assert.rejects(sb.setAutoPause(86401), CreateosSandboxValidationError);
    await assert.rejects(sb.setAutoPause(1), CreateosSandboxValidationError);
    await sb.setIngress(true);
    assert.equal(sb.data.ingress_enabled, true);
    await sb.setIngress(false);
    const grown = await sb.resize(sb.data.disk_mib + 1024);
    assert.equal(grown.disk_mib, 11264);
    await assert.rejects(sb.resize(2048), CreateosSandboxValidationError);
  });

  it("tunnel: 101, bytes both ways, half-close honoured; refusals are JSend", async () => {
    await sb.runCommand("sh", [
      "-c",
      "nohup python3 -c \"import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',7001));s.listen(5)\nwhile True:\n c,_=s.accept();d=b''\n while True:\n  x=c.recv(65536)\n  if not x: break\n  d+=x\n c.sendall(b'len='+str(len(d)).encode());c.close()\" >/dev/null 2>&1 &",
    ]);
    await sb.waitForPortReady(7001, { timeoutMs: 20_000 });
    const payload = randomBytes(200_000);
    // The first bytes travel in the same packet as the request head: they must not be lost.
    const t = await upgrade(
      s.port,
      `/v1/sandboxes/${sb.id}/tunnel/7001`,
      s.adminKey,
      payload.subarray(0, 1000),
    );
    assert.equal(t.status, 101, t.head);
    t.sock.write(payload.subarray(1000));
    t.sock.end(); // half-close: the server must still deliver the echo server's answer
    const got = await t.waitFor(/len=\d+/);
    assert.match(got, new RegExp(`len=${payload.length}`));
    await t.ended;
    const refused = await upgrade(s.port, `/v1/sandboxes/${sb.id}/tunnel/7999`, s.adminKey);
    assert.notEqual(refused.status, 101);
    refused.sock.destroy();
  });

  it("shell: 101, resize frame first, keystrokes in, PTY output out, exit closes", async () => {
    const sh = await upgrade(s.port, `/v1/sandboxes/${sb.id}/shell`, s.adminKey, resizeFrame(40, 120));
    assert.equal(sh.status, 101, sh.head);
    sh.sock.write(frame(0, Buffer.from("stty size; echo hi-$((40+2))\n")));
    const out = await sh.waitFor(/hi-42/);
    assert.match(out, /40 120/);
    sh.sock.write(frame(0, Buffer.from("exit\n")));
    await sh.ended;
  });

  it("access tokens: runtime routes of their own sandbox only", async () => {
    const created = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/access-token`, { key: s.adminKey });
    assert.equal(created.status, 200);
    const token = created.json.data.token as string;
    assert.equal(created.json.data.enabled, true);
    assert.equal(
      (await call(s.url, "POST", `/v1/sandboxes/${sb.id}/access-token`, { key: s.adminKey })).status,
      409,
    );
    const meta = await call(s.url, "GET", `/v1/sandboxes/${sb.id}/access-token`, { key: s.adminKey });
    assert.equal(meta.json.data.enabled, true);
    assert.ok(!JSON.stringify(meta.json).includes(token));
    const viaToken = new CreateosSandboxClient({ apiKey: token, baseUrl: s.url, retry: false });
    const h = await viaToken.getSandbox(sb.id);
    assert.equal((await h.runCommand("echo", ["tok"])).result.stdout, "tok\n");
    await assert.rejects(h.pause(), CreateosSandboxPermissionError);
    await assert.rejects(viaToken.listSandboxes(), CreateosSandboxPermissionError);
    const rotated = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/access-token/rotate`, {
      key: s.adminKey,
    });
    assert.notEqual(rotated.json.data.token, token);
    assert.equal((await call(s.url, "GET", `/v1/sandboxes/${sb.id}`, { key: token })).status, 401);
    await call(s.url, "DELETE", `/v1/sandboxes/${sb.id}/access-token`, { key: s.adminKey });
    assert.equal(
      (await call(s.url, "GET", `/v1/sandboxes/${sb.id}`, { key: rotated.json.data.token })).status,
      401,
    );
  });

  it("tenancy: every sandbox route is 404 for another tenant, lists are disjoint", async () => {
    const h = (await bob.listSandboxes()).map((x) => x.id);
    assert.ok(!h.includes(sb.id));
    await assert.rejects(bob.getSandbox(sb.id), CreateosSandboxNotFoundError);
    for (const [m, suffix, body] of SANDBOX_ROUTES) {
      const r = await call(s.url, m, `/v1/sandboxes/${sb.id}${suffix}`, {
        key: bobKey,
        ...(body ? { body } : {}),
      });
      assert.equal(r.status, 404, `${m} ${suffix}: ${r.status} ${r.text}`);
    }
    assert.equal((await call(s.url, "GET", `/v1/sandboxes/by-ip/${sb.ip}`, { key: bobKey })).status, 404);
    for (const p of ["shell", "tunnel/22"]) {
      const u = await upgrade(s.port, `/v1/sandboxes/${sb.id}/${p}`, bobKey);
      assert.equal(u.status, 404, p);
      u.sock.destroy();
    }
    assert.equal((await client.getSandbox(sb.id)).status, "running", "nothing bob did changed it");
  });

  it("pause → paused (202 + X-Poll-After), runtime calls 409, fork x2, resume keeps the disk", async () => {
    // Two pauses racing: the status compare-and-set lets exactly one through.
    const [r1, r2] = await Promise.all([
      call(s.url, "POST", `/v1/sandboxes/${sb.id}/pause`, { key: s.adminKey }),
      call(s.url, "POST", `/v1/sandboxes/${sb.id}/pause`, { key: s.adminKey }),
    ]);
    const codes = [r1.status, r2.status].sort();
    assert.ok(JSON.stringify(codes) === "[202,409]" || JSON.stringify(codes) === "[200,202]", String(codes));
    const raw = r1.status === 202 ? r1 : r2;
    assert.ok(raw.headers.get("x-poll-after"));
    assert.ok(["pausing", "paused"].includes(raw.json.data.status));
    await sb.waitUntilPaused({ timeoutMs: 60_000 });
    assert.ok(sb.data.paused_at);
    const again = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/pause`, { key: s.adminKey });
    assert.equal(again.status, 200);
    await assert.rejects(sb.runCommand("true"), CreateosSandboxValidationError);
    await assert.rejects(sb.files.download("/etc/hostname"), CreateosSandboxValidationError);
    const child = await sb.fork();
    toDestroy.push(child);
    assert.notEqual(child.id, sb.id);
    assert.equal(child.data.forked_from, sb.id);
    if (child.status !== "running") await child.waitUntilRunning({ timeoutMs: 60_000 });
    assert.equal((await child.runCommand("sh", ["-c", "echo $FOO"])).result.stdout, "bar\n");
    const kept = Buffer.from(await child.files.download("/tmp/it/deep/blob.bin"));
    assert.equal(kept.length, 3 * 1024 * 1024 + 17);
    const parked = await sb.fork({ start_paused: true, envs: { FOO: "override" } });
    toDestroy.push(parked);
    assert.equal(parked.status, "paused");
    assert.deepEqual(parked.data.envs, ["FOO"]);
    assert.equal((await client.getSandbox(sb.id)).status, "paused", "the parent stays paused");
    const res = await call(s.url, "POST", `/v1/sandboxes/${sb.id}/resume`, { key: s.adminKey });
    assert.equal(res.status, 202);
    await sb.waitUntilRunning({ timeoutMs: 60_000 });
    assert.ok(sb.data.last_resumed_at);
    assert.equal(
      (await call(s.url, "POST", `/v1/sandboxes/${sb.id}/resume`, { key: s.adminKey })).status,
      200,
    );
    assert.equal(Buffer.from(await sb.files.download("/tmp/it/deep/blob.bin")).length, 3 * 1024 * 1024 + 17);
    await assert.rejects(child.fork(), CreateosSandboxValidationError, "fork needs a paused source");
  });

  it("auto-pause fires after the idle timeout through the pause path", async () => {
    const idle = await client.createSandbox({ shape: SHAPE, auto_pause_after_seconds: 2 });
    toDestroy.push(idle);
    assert.equal(idle.data.auto_pause_after_seconds, 2);
    await idle.waitUntilPaused({ timeoutMs: 30_000 });
    const line = await s.waitLog(new RegExp(`"msg":"auto-pause".*${idle.id}`));
    assert.ok(line);
    await idle.resume();
    await idle.waitUntilRunning({ timeoutMs: 60_000 });
    await idle.setAutoPause(null);
  });

  it("self-signal from inside the guest pauses and deletes through the same paths", async () => {
    const idle = toDestroy.at(-1)!;
    // Fired from a background process: the pause may land before an exec that signalled inline returns.
    const signal = async (what: string) => {
      const py = `import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:1029/self/${what}?reason=from-test', method='POST')).status)`;
      await idle.runCommand("sh", [
        "-c",
        `(sleep 0.3; python3 -c "${py}" > /tmp/self-${what}.out 2>&1) >/dev/null 2>&1 &`,
      ]);
    };
    await signal("pause");
    await idle.waitUntilPaused({ timeoutMs: 30_000 });
    await s.waitLog(new RegExp(`"msg":"self signal".*${idle.id}.*self-pause: from-test`));
    await idle.resume();
    await idle.waitUntilRunning({ timeoutMs: 60_000 });
    // The signalling process was frozen by the pause it asked for; after the resume it prints the 202.
    let answered = "";
    for (let i = 0; i < 50 && answered !== "202"; i++) {
      answered = Buffer.from(await idle.files.download("/tmp/self-pause.out").catch(() => new ArrayBuffer(0)))
        .toString()
        .trim();
      if (answered !== "202") await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(answered, "202");
    await signal("delete");
    await idle.waitUntilDestroyed({ timeoutMs: 30_000 });
    assert.ok((await client.getSandbox(idle.id)).data.destroyed_at);
  });

  it("destroy: destroying → destroyed, rows stay readable, destroy is idempotent, metrics count VM ops", async () => {
    for (const x of toDestroy) {
      const r = await x.destroy();
      assert.ok(["destroying", "destroyed"].includes(r.status));
    }
    for (const x of toDestroy) await x.waitUntilDestroyed({ timeoutMs: 60_000 });
    const gone = (await client.getSandbox(sb.id)).data;
    assert.equal(gone.status, "destroyed");
    assert.ok(gone.destroyed_at);
    assert.equal((await sb.destroy()).status, "destroyed");
    const hosts = await client.listHosts();
    assert.equal(hosts[0]!.vm_count, 0, "no VM left behind");
    const m = await call(s.url, "GET", "/metrics", { key: s.adminKey });
    assert.match(m.text, /createos_vm_operation_duration_seconds_count\{op="create",result="ok"\} \d+/);
    assert.match(m.text, /createos_sandboxes\{state="destroyed"\} \d+/);
    // The name is free again once its sandbox is destroyed.
    const again = await client.createSandbox({ shape: SHAPE, name: "itest-main" });
    await again.destroy();
    await again.waitUntilDestroyed({ timeoutMs: 60_000 });
    toDestroy.length = 0;
    // Destroy detached it: the network can go now.
    assert.deepEqual(await client.networks.delete(netId), { ok: true });
  });
});
