/**
 * Templates against the real server and engine, driven by the PUBLISHED SDK (@nodeops-createos/sandbox):
 * the seed recipe (how-to-disks-networks-templates §3) verbatim apart from the import and `console`,
 * then ENV/WORKDIR in a sandbox from a template, a failing RUN, the per-user build limit, and a build cut
 * short by a server restart.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CreateosSandboxClient, createClient, pollUntil } from "@nodeops-createos/sandbox";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, cleanup } from "./helpers.js";

let s: ServerProc;
/** The first server's bootstrap key: the user it made outlives restarts. */
let key: string;
const log: string[] = [];
const console = {
  log: (...a: unknown[]) => log.push(a.map(String).join(" ")),
  warn: (...a: unknown[]) => log.push(`warn: ${a.map(String).join(" ")}`),
};
const out: string[] = [];
const process = { stdout: { write: (t: string) => out.push(t) } };

before(async () => {
  s = await startEngineServer();
  key = s.adminKey;
  globalThis.process.env.CREATEOS_SANDBOX_API_KEY = s.adminKey;
  globalThis.process.env.CREATEOS_SANDBOX_BASE_URL = s.url;
});
after(async () => {
  if (s) await destroyAll(s, [key]);
  await s?.stop();
  if (s) cleanup(s.dataDir);
});

const timeout = 30 * 60_000;

test(
  "seed recipe §3: a ripgrep template from Debian's packages, a sandbox runs rg",
  { timeout },
  async () => {
    const client = createClient();

    // Dockerfile rules: single FROM using an allowlisted createos-sandbox base
    // image. No COPY / ADD — layer content comes from RUN only.
    const DOCKERFILE = `FROM nodeops/sandbox:debian
RUN apt-get update -qq \\
 && apt-get install -y --no-install-recommends ripgrep ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
`;

    const TEMPLATE_NAME = `rg-base-${Date.now()}`;

    // 1. Submit the build. Returns immediately with status "pending".
    const tmpl = await client.templates.create({
      name: TEMPLATE_NAME,
      dockerfile: DOCKERFILE,
      // base: "devbox:1", // override the base rootfs (empty = host default)
    });
    console.log("template id:", tmpl.id, "status:", tmpl.status);

    try {
      // 2. Stream build logs until the terminal event arrives.
      // Pass a generous timeoutMs — builds can outlast the default 60 s deadline.
      try {
        for await (const event of client.templates.followLogs(tmpl.id, { timeoutMs: 600_000 })) {
          if (event.line) process.stdout.write(event.line + "\n");
          if (event.final) {
            console.log("build finished:", event.status);
            break;
          }
        }
      } catch {
        // Stream may close before the final event; confirm status by polling below.
      }

      // 3. Poll for terminal status — the log stream may close before "ready".
      await pollUntil({
        poll: () => client.templates.get(tmpl.id).then((t) => t.status),
        done: (status) => status === "ready",
        failed: (status) =>
          status === "pending" || status === "building"
            ? undefined
            : `template build failed (${status}) — see build logs`,
        timeoutMs: 600_000,
      });
      console.log("template ready:", tmpl.id);

      // (not in the recipe) the full log as text, the source back, the name resolving to this build
      const text = await client.templates.logs(tmpl.id);
      assert.equal(text, out.join(""), "logs() is what followLogs streamed");
      const full = await client.templates.get(tmpl.id, { include: "dockerfile" });
      assert.equal(full.dockerfile, DOCKERFILE);
      assert.ok(full.ext4_size_bytes > 0 && full.built_at, JSON.stringify(full));
      assert.equal((await client.templates.get(TEMPLATE_NAME)).id, tmpl.id);

      // 4. Boot a sandbox on the template.
      // rootfs accepts the template id or its name.
      const sandbox = await client.createSandbox({
        shape: "s-4vcpu-4gb",
        rootfs: tmpl.id,
      });

      try {
        const rg = await sandbox.runCommand("rg", ["--version"]);
        console.log(rg.result.stdout.trim());
      } finally {
        await sandbox.destroy();
      }
    } finally {
      // 5. Delete the template when no longer needed.
      await client.templates.delete(tmpl.id).catch((e) => console.warn(e));
    }
    assert.match(log[0]!, /^template id: tpl_[0-9a-z]{26} status: pending$/);
    assert.equal(log[1], "build finished: ready");
    assert.match(log[3]!, /^ripgrep \d+\.\d+\.\d+/);
    assert.equal(log.length, 4, log.join("\n"));
    const streamed = out.join("");
    assert.match(streamed, /^Step 1\/2 : FROM nodeops\/sandbox:debian$/m);
    assert.match(streamed, /^Step 2\/2 : RUN apt-get update -qq/m);
    assert.match(streamed, /Setting up ripgrep/, "real apt output, streamed");
    assert.match(streamed, /---> exit code 0 in [\d.]+ s/);
    await assert.rejects(client.templates.get(tmpl.id), /not found/);
  },
);

test(
  "ENV and WORKDIR reach exec; a failing RUN fails with its exit code; two builds at a time",
  { timeout },
  async () => {
    const client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    const good = await client.templates.create({
      name: "envtpl",
      dockerfile:
        "FROM nodeops/sandbox:debian\nENV GREETING=hello\nWORKDIR /srv/app\nRUN echo built > marker.txt\n",
    });
    const bad = await client.templates.create({
      name: "badtpl",
      dockerfile:
        "FROM nodeops/sandbox:debian\nRUN echo first\nRUN echo about to fail && exit 7\nRUN echo never\n",
    });
    // both still building: a third is refused with Retry-After
    const third = await fetch(`${s.url}/v1/templates`, {
      method: "POST",
      headers: { "x-api-key": s.adminKey, "content-type": "application/json" },
      body: JSON.stringify({ name: "third", dockerfile: "FROM nodeops/sandbox:debian\n" }),
    });
    assert.equal(third.status, 429);
    assert.ok(Number(third.headers.get("retry-after")) > 0);
    assert.match(
      ((await third.json()) as { data: { template: string } }).data.template,
      /^concurrent template build limit reached \(2 per user\)/,
    );

    const settle = (id: string) =>
      pollUntil({
        poll: () => client.templates.get(id).then((t) => t.status),
        done: (st) => st === "ready" || st === "failed",
        timeoutMs: 900_000,
      });
    await Promise.all([settle(good.id), settle(bad.id)]);
    assert.equal((await client.templates.get(bad.id)).status, "failed");
    const badLog = await client.templates.logs(bad.id);
    assert.match(badLog, /^about to fail$/m);
    assert.match(badLog, /Step 3\/4 : RUN echo about to fail && exit 7: failed with exit code 7/);
    assert.doesNotMatch(badLog, /never|Step 4\/4/, "stops at the first failing step");

    assert.equal((await client.templates.get(good.id)).status, "ready");
    const probe = ["-c", 'echo "$GREETING"; pwd; cat marker.txt'];
    const sb = await client.createSandbox({ shape: "s-1vcpu-1gb", rootfs: "envtpl" });
    try {
      assert.equal((await sb.runCommand("sh", probe)).result.stdout, "hello\n/srv/app\nbuilt\n");
      // a rebuild under the same name changing the last step: only that step runs again, new creates get
      // the new build, the sandbox made from the old one keeps running
      const df2 =
        "FROM nodeops/sandbox:debian\nENV GREETING=hello\nWORKDIR /srv/app\nRUN echo rebuilt > marker.txt\n";
      const again = await client.templates.create({ name: "envtpl", dockerfile: df2 });
      await settle(again.id);
      const log2 = await client.templates.logs(again.id);
      assert.equal((await client.templates.get(again.id)).status, "ready", log2);
      assert.match(log2, /Step 2\/2 : RUN echo rebuilt > marker.txt\n ---> exit code 0/);
      // the same Dockerfile again: every step from the cache
      const cached = await client.templates.create({ name: "envtpl", dockerfile: df2 });
      await settle(cached.id);
      assert.match(
        await client.templates.logs(cached.id),
        /RUN echo rebuilt > marker.txt\n ---> Using cache/,
      );
      const sb2 = await client.createSandbox({ shape: "s-1vcpu-1gb", rootfs: "envtpl" });
      try {
        assert.equal(sb2.data.rootfs, cached.id);
        assert.equal((await sb2.runCommand("sh", probe)).result.stdout, "hello\n/srv/app\nrebuilt\n");
      } finally {
        await sb2.destroy();
      }
      await client.templates.delete(cached.id);
      assert.equal((await sb.runCommand("cat", ["marker.txt"])).result.stdout, "built\n");
    } finally {
      await sb.destroy();
    }
  },
);

test("a build cut short by a server restart ends failed, saying so", { timeout }, async () => {
  const client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
  const t = await client.templates.create({
    name: "slow",
    dockerfile: "FROM nodeops/sandbox:debian\nRUN sleep 3000\n",
  });
  await pollUntil({
    poll: () => client.templates.logs(t.id),
    done: (text) => /Step 2\/2/.test(text),
    timeoutMs: 600_000,
  });
  const dataDir = s.dataDir;
  await s.stop("SIGKILL");
  s = await startEngineServer({}, dataDir);
  const again = new CreateosSandboxClient({ apiKey: key, baseUrl: s.url, retry: false });
  const after = await again.templates.get(t.id);
  assert.equal(after.status, "failed");
  assert.match(await again.templates.logs(t.id), /build interrupted by a server restart/);
});
