/**
 * Issue 7's "done when": two `createos-sandbox hostd` processes and one `serve --hostd A --hostd B`, on
 * real VMs. Sandboxes land on both hosts and work through them (published SDK for the API, our SDK for
 * shell and tunnel); each sandbox survives a `kill -9` of the control plane and of its host daemon (which
 * re-adopts its VMs on restart, while the control plane answers 503 + Retry-After meanwhile); destroy
 * leaves no QEMU behind; and a host daemon refuses every request without its token.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { CreateosSandboxClient as OurClient } from "@createos-sandbox/sdk";
import { CreateosSandboxClient } from "@nodeops-createos/sandbox";
import { type HostdProc, destroyAll, qemuPids, startEngineServer, startHostd } from "./engine-helpers.js";
import { type ServerProc, call, cleanup } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";
const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "cli", "bin", "createos.js");
const TOKEN = `mh-${randomBytes(16).toString("hex")}`;
const IDS = ["mh-host-a", "mh-host-b"];
/** The host the test kills -9 and restarts. */
const VICTIM = 1;

/** Our `createos` CLI (packages/cli/bin), run to completion. */
function createos(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { env, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        if (err && typeof err.code !== "number") reject(err);
        else resolve({ code, stdout, stderr });
      },
    );
    // `sandbox exec` forwards a piped stdin to the command: give it an empty one.
    child.stdin?.end();
  });
}

/** Rejects when `p` takes longer than `ms`: a hang is a failure, not a stuck test. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(
  what: string | (() => string),
  ms: number,
  ok: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === "string" ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("two host daemons behind one control plane", { timeout: 20 * 60_000 }, () => {
  const hostDirs = IDS.map(() => mkdtempSync(join(tmpdir(), "csb-mh-hostd-")));
  const cpDir = mkdtempSync(join(tmpdir(), "csb-mh-cp-"));
  const hostds: HostdProc[] = [];
  let s: ServerProc | undefined;
  let client: CreateosSandboxClient;
  let ours: OurClient;
  /** Every sandbox made, with the host the control plane placed it on. */
  const made: { id: string; host: string }[] = [];
  /** The first sandbox on each host, by host id: the one the capability checks use. */
  const first = new Map<string, string>();

  const startControlPlane = async () => {
    const args = hostds.flatMap((h) => ["--hostd", h.url]);
    s = await startEngineServer(
      { CREATEOS_SANDBOX_HOSTD_TOKEN: TOKEN, CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0" },
      cpDir,
      args,
    );
    client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    ours = new OurClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
  };
  const view = async (id: string) => {
    const r = await call(s!.url, "GET", `/v1/sandboxes/${id}`, { key: s!.adminKey });
    assert.equal(r.status, 200, r.text);
    return r.json.data as { status: string; host_id?: string };
  };
  // biome-ignore lint/suspicious/noExplicitAny: the host rows carry more fields than the SDK types
  const hosts = async (): Promise<any[]> => {
    const r = await within(10_000, "GET /v1/hosts", call(s!.url, "GET", "/v1/hosts", { key: s!.adminKey }));
    assert.equal(r.status, 200, r.text);
    return r.json.data.data;
  };
  const on = (host: string) => made.filter((m) => m.host === host).map((m) => m.id);
  const exec = (id: string, cmd: string) =>
    call(s!.url, "POST", `/v1/sandboxes/${id}/exec`, {
      key: s!.adminKey,
      body: { cmd: "sh", args: ["-c", cmd] },
    });

  /** /v1/hosts answers from the last health check (every 2 s): its VM counts catch up within a few. */
  const countsSettle = async () => {
    let seen = "";
    await until(
      () => `vm_count per host to match the sandboxes there; saw ${seen}`,
      10_000,
      async () => {
        const listed = await hosts();
        seen = JSON.stringify(listed.map((h) => [h.id, h.vm_count, on(h.id).length]));
        return listed.every((h) => h.vm_count === on(h.id).length);
      },
    );
  };

  before(async () => {
    for (const [i, id] of IDS.entries()) {
      hostds.push(await startHostd({ dataDir: hostDirs[i]!, id, token: TOKEN }));
    }
    await startControlPlane();
  });

  after(async () => {
    if (s && hostds.every((h) => h.proc.exitCode === null && h.proc.signalCode === null)) {
      await within(150_000, "destroy all", destroyAll(s, [s.adminKey])).catch(() => undefined);
    }
    await s?.stop("SIGKILL");
    for (const h of hostds) await h.stop();
    // A failed run must not leave VMs behind: these QEMUs were started by our host daemons.
    for (const pid of qemuPids(hostDirs)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const d of [...hostDirs, cpDir]) cleanup(d);
  });

  it("each hostd answers 401 to any request without its token, a plain GET / included", async () => {
    for (const h of hostds) {
      const info = `${h.url}/v1/call/info`;
      const post = (headers: Record<string, string>) =>
        fetch(info, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: "[]",
        });
      assert.equal((await fetch(`${h.url}/`)).status, 401, "GET / without a token");
      assert.equal((await post({})).status, 401, "a call without a token");
      assert.equal((await post({ authorization: `Bearer ${TOKEN}x` })).status, 401, "a wrong token");
      assert.equal((await post({ authorization: TOKEN })).status, 401, "the token without Bearer");
      // The same call with the token goes through: the 401s above are about the token alone.
      const ok = await post({ authorization: `Bearer ${TOKEN}` });
      assert.equal(ok.status, 200, await ok.text());
    }
  });

  it("places new sandboxes on both hosts; /v1/hosts lists both as healthy", async () => {
    const listed = await hosts();
    assert.deepEqual(listed.map((h) => h.id).sort(), [...IDS].sort());
    for (const h of listed) {
      assert.equal(h.healthy, true, JSON.stringify(h));
      assert.equal(h.status, "active");
      assert.ok(h.free_mib > 0, JSON.stringify(h));
      assert.equal(typeof h.accel, "string");
    }
    // Most free memory wins, so the second create should go to the other host; four is the bound.
    for (let i = 0; i < 4 && first.size < IDS.length; i++) {
      const sb = await client.createSandbox({ shape: SHAPE, name: `mh-${i}` });
      assert.equal(sb.status, "running");
      const host = (await view(sb.id)).host_id;
      assert.ok(host && IDS.includes(host), `host_id ${host}`);
      made.push({ id: sb.id, host });
      if (!first.has(host)) first.set(host, sb.id);
    }
    assert.equal(first.size, IDS.length, `placement used only ${[...first.keys()]}`);
    await countsSettle();
  });

  it("exec, files, shell and tunnel work on both hosts", async () => {
    await Promise.all(
      IDS.map(async (host) => {
        const sb = await client.getSandbox(first.get(host)!);
        const r = await sb.runCommand("sh", ["-c", "echo out-$((6*7)); exit 5"]);
        assert.equal(r.result.stdout, "out-42\n");
        assert.equal(r.result.exit_code, 5);
        await sb.files.upload("/root/marker", `marker of ${host}`);
        assert.equal(Buffer.from(await sb.files.download("/root/marker")).toString(), `marker of ${host}`);

        const mine = await ours.getSandbox(sb.id);
        const sh = await mine.shell();
        let screen = "";
        sh.onData((c) => {
          screen += c.toString();
        });
        sh.resize(40, 120);
        sh.write("stty size; echo hi-$((40+2))\n");
        await until("shell output", 30_000, () => /hi-42/.test(screen));
        assert.match(screen, /40 120/);
        sh.write("exit\n");
        await within(15_000, "shell close after exit", sh.closed);

        // A web server in the guest, kept running: after the host daemon's restart it shows the VM lived on.
        await sb.runCommand("sh", [
          "-c",
          "cd /root && nohup python3 -m http.server 7001 --bind 127.0.0.1 >/dev/null 2>&1 &",
        ]);
        await sb.waitForPortReady(7001, { timeoutMs: 30_000 });
        assert.equal(await viaTunnel(mine, "/marker"), `marker of ${host}`);
      }),
    );
  });

  it("our CLI lists the sandboxes of both hosts and runs commands on each", async () => {
    const env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: cpDir,
      CREATEOS_SANDBOX_API_KEY: s!.adminKey,
      CREATEOS_SANDBOX_URL: s!.url,
    };
    const listed = await createos(["sandbox", "list", "--output", "json"], env);
    assert.equal(listed.code, 0, listed.stderr);
    const ids = (JSON.parse(listed.stdout) as { id: string }[]).map((x) => x.id);
    for (const id of first.values()) assert.ok(ids.includes(id), `${id} in ${ids}`);
    for (const [host, id] of first) {
      const r = await createos(["sandbox", "exec", id, "--", "cat", "/root/marker"], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `marker of ${host}`);
    }
  });

  /** Runs `fn`; a failure carries the warnings the host daemons and the control plane logged meanwhile. */
  const explained = async (fn: () => Promise<void>) => {
    const from = [s!, ...hostds].map((p) => p.logs.length);
    try {
      await fn();
    } catch (e) {
      const said = [s!, ...hostds]
        .flatMap((p, i) => p.logs.slice(from[i]))
        .filter((l) => /"level":"(warn|error)"/.test(l))
        .slice(-12);
      if (e instanceof Error) e.message += `\nlogged meanwhile:\n${said.join("\n")}`;
      throw e;
    }
  };

  it("pause, fork and resume run on the host holding the snapshot", async () => {
    await explained(async () => {
      await Promise.all(
        IDS.map(async (host) => {
          const sb = await client.getSandbox(first.get(host)!);
          await sb.pause();
          await sb.waitUntilPaused({ timeoutMs: 120_000 });
          const child = await sb.fork();
          assert.equal((await view(child.id)).host_id, host, "the fork runs where the snapshot is");
          made.push({ id: child.id, host });
          if (child.status !== "running") await child.waitUntilRunning({ timeoutMs: 120_000 });
          assert.equal(
            Buffer.from(await child.files.download("/root/marker")).toString(),
            `marker of ${host}`,
          );
          await sb.resume();
          await sb.waitUntilRunning({ timeoutMs: 120_000 });
          assert.equal((await view(sb.id)).host_id, host, "resume stays on the sandbox's host");
          const r = await sb.runCommand("cat", ["/root/marker"]);
          assert.equal(r.result.stdout, `marker of ${host}`);
        }),
      );
    });
    await countsSettle();
  });

  it("kill -9 of the control plane: restarted on its data dir, every sandbox is there and usable", async () => {
    await s!.stop("SIGKILL");
    await startControlPlane();
    for (const m of made) {
      const v = await view(m.id);
      assert.equal(v.status, "running", `${m.id} after the restart`);
      assert.equal(v.host_id, m.host, `${m.id} still names its host`);
      const r = await exec(m.id, "echo alive");
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.data.result.stdout, "alive\n");
    }
  });

  it("kill -9 of a hostd: 503 + Retry-After at once, the other host works; restarted, it re-adopts its VMs", async () => {
    const victim = hostds[VICTIM]!;
    const host = IDS[VICTIM]!;
    const other = IDS[1 - VICTIM]!;
    const down = on(host);
    assert.ok(down.length >= 2, `a sandbox and its fork on ${host}: ${down}`);
    const bootIds = new Map<string, string>();
    for (const id of down) {
      const boot = (await exec(id, "cat /proc/sys/kernel/random/boot_id")).json.data.result.stdout;
      assert.match(boot, /^[0-9a-f-]{36}\n$/);
      bootIds.set(id, boot);
    }
    const before = qemuPids([hostDirs[VICTIM]!]);
    assert.ok(before.length >= down.length, `QEMU of ${host}: ${before}`);

    await victim.stop("SIGKILL");
    for (const id of down) {
      const t0 = Date.now();
      const r = await within(10_000, `exec on ${id} with its host down`, exec(id, "true"));
      assert.equal(r.status, 503, r.text);
      assert.ok(Number(r.headers.get("retry-after")) > 0, `Retry-After: ${r.headers.get("retry-after")}`);
      const f = await within(
        10_000,
        `file read on ${id} with its host down`,
        call(s!.url, "GET", `/v1/sandboxes/${id}/files?path=/root/marker`, { key: s!.adminKey }),
      );
      assert.equal(f.status, 503, f.text);
      assert.ok(f.headers.get("retry-after"));
      assert.ok(Date.now() - t0 < 10_000, "both refusals came within a few seconds");
    }
    for (const id of on(other)) {
      const r = await within(30_000, `exec on ${id} (healthy host)`, exec(id, "echo fine"));
      assert.equal(r.json?.data?.result?.stdout, "fine\n", r.text);
    }
    await until(`${host} reported unhealthy`, 15_000, async () => {
      const h = (await hosts()).find((x) => x.id === host);
      return h?.healthy === false;
    });
    assert.equal((await hosts()).find((x) => x.id === other)?.healthy, true);

    // Same data dir, same id, same address: the control plane finds it where it was.
    hostds[VICTIM] = await startHostd({
      dataDir: hostDirs[VICTIM]!,
      id: host,
      token: TOKEN,
      listen: `127.0.0.1:${victim.port}`,
    });
    assert.equal(hostds[VICTIM]!.url, victim.url);
    for (const id of down) {
      let last = "";
      await until(
        () => `exec on ${id} after its host returned (last: ${last})`,
        60_000,
        async () => {
          const r = await exec(id, "cat /proc/sys/kernel/random/boot_id");
          last = r.text;
          return r.status === 200;
        },
      );
      const r = await exec(id, "cat /proc/sys/kernel/random/boot_id");
      assert.equal(
        r.json.data.result.stdout,
        bootIds.get(id),
        `${id} kept running (same boot) through the restart`,
      );
    }
    const survivors = qemuPids([hostDirs[VICTIM]!]).filter((p) => before.includes(p));
    assert.ok(survivors.length >= down.length, `re-adopted, not relaunched: ${before} → ${survivors}`);
    // The web server started before the kill still answers: the guest never stopped.
    const mine = await ours.getSandbox(first.get(host)!);
    assert.equal(await viaTunnel(mine, "/marker"), `marker of ${host}`);
    await until(`${host} healthy again`, 15_000, async () => {
      const h = (await hosts()).find((x) => x.id === host);
      return h?.healthy === true && h.vm_count === down.length;
    });
  });

  it("destroy leaves no QEMU on either host", async () => {
    for (const m of made) await (await client.getSandbox(m.id)).destroy();
    for (const m of made) await (await client.getSandbox(m.id)).waitUntilDestroyed({ timeoutMs: 60_000 });
    made.length = 0; // all destroyed: each host must count none
    await countsSettle();
    // Warm-pool VMs are the daemons' own until they stop: a clean stop takes them down too.
    await s!.stop();
    for (const h of hostds) await h.stop();
    await until("no QEMU of either host daemon", 15_000, () => qemuPids(hostDirs).length === 0);
  });
});

/** GETs `path` from the guest's port 7001 through our SDK's local tunnel. */
async function viaTunnel(sb: Awaited<ReturnType<OurClient["getSandbox"]>>, path: string): Promise<string> {
  const t = await sb.tunnel(7001);
  try {
    const r = await within(30_000, "fetch through the tunnel", fetch(`http://127.0.0.1:${t.port}${path}`));
    assert.equal(r.status, 200);
    return await r.text();
  } finally {
    await t.close();
  }
}
