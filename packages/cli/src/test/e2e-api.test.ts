/**
 * End-to-end against the real control plane without the VM engine (CREATEOS_SANDBOX_HOSTD=none):
 * auth, catalog, lists, name resolution and how server errors surface. The VM-backed commands are
 * in e2e-vm.vm.test.ts.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Server,
  Tmux,
  cleanEnv,
  requireTools,
  runCli,
  startServer,
  tempDir,
  tmuxCommand,
} from "./helpers.js";

requireTools("tmux");

describe("e2e against the real server (no VM engine)", () => {
  let server: Server;
  let home: string;
  let env: Record<string, string>;

  before(async () => {
    server = await startServer({ engine: false });
    home = tempDir("cli-e2e-home-");
    env = cleanEnv({ HOME: home });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(home, { recursive: true, force: true });
  });

  it("login checks the key against the server and stores it", async () => {
    const bad = await runCli(
      ["login", "--token", "skp_wrong_key_000000000000", "--url", server.url, "-o", "table"],
      { env },
    );
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /rejected this API key/);
    assert.equal(fs.existsSync(path.join(home, ".createos", ".token")), false, "a rejected key is not saved");

    const r = await runCli(["login", "--token", server.key, "--url", server.url, "-o", "json"], { env });
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.action, "logged_in");
    assert.match(doc.user_id, /^usr_/);
    assert.equal(fs.statSync(path.join(home, ".createos", ".token")).mode & 0o777, 0o600);
  });

  it("shapes and rootfs: a table on request, JSON by default off a terminal", async () => {
    const t = await runCli(["sandbox", "shapes", "-o", "table"], { env });
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^ID\s+VCPU\s+MEMORY\s+DISK$/m);
    assert.match(t.stdout, /^s-1vcpu-256mb\s+1\s+256 MiB/m);
    const j = await runCli(["sb", "shapes"], { env });
    const shapes = JSON.parse(j.stdout) as Array<{ id: string; mem_mib: number }>;
    assert.ok(shapes.some((s) => s.id === "s-1vcpu-256mb" && s.mem_mib === 256));

    const rt = await runCli(["sb", "rootfs", "-o", "table"], { env });
    assert.equal(rt.code, 0);
    assert.match(rt.stdout, /devbox:1 \(default\)/);
    const rj = JSON.parse((await runCli(["sb", "rootfs", "--output", "json"], { env })).stdout);
    assert.equal(rj.default, "devbox:1");
  });

  it("list: JSON array, quiet, and table with no sandboxes", async () => {
    const j = await runCli(["sandbox", "list", "--output", "json"], { env });
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(JSON.parse(j.stdout), []);
    const q = await runCli(["sb", "list", "--quiet", "--all"], { env });
    assert.equal(q.code, 0);
    assert.equal(q.stdout, "");
    const t = await runCli(["sb", "ls", "-o", "table"], { env });
    assert.match(t.stdout, /No active sandboxes/);
  });

  it("names that match nothing: not found, exit 1, one line", async () => {
    for (const args of [
      ["sb", "get", "nope"],
      ["sb", "exec", "nope", "--", "true"],
      ["sb", "pause", "sb-00000000000000000000000000"],
    ]) {
      const r = await runCli(["-o", "table", ...args], { env });
      assert.equal(r.code, 1, args.join(" "));
      const ref = args[2] as string;
      assert.equal(r.stderr, `error: not found: sandbox "${ref}"\n`);
    }
    const j = await runCli(["sb", "get", "nope"], { env });
    assert.deepEqual(JSON.parse(j.stdout), {
      error: { code: "not_found", message: 'not found: sandbox "nope"' },
    });
  });

  it("server refusals surface as one clear line (JSON error document in JSON mode)", async () => {
    const bad = await runCli(["sb", "create", "--shape", "s-nope", "-o", "table"], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: .*s-nope/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    const j = await runCli(["sb", "create", "--shape", "s-nope"], { env });
    assert.equal(j.code, 1);
    assert.equal(JSON.parse(j.stdout).error.code, "bad_request");
  });

  it("network, disk and template groups call the server and show its answer", async () => {
    const n = await runCli(["sb", "network", "ls"], { env });
    assert.equal(n.code, 0, n.stderr);
    assert.ok(Array.isArray(JSON.parse(n.stdout)));
    const t = await runCli(["sb", "template", "ls"], { env });
    assert.equal(t.code, 0, t.stderr);
    assert.ok(Array.isArray(JSON.parse(t.stdout)));
    const d = await runCli(["sb", "disk", "ls", "-o", "table"], { env });
    // Whatever the server says about disks, it arrives as one line or a table, never a trace.
    assert.ok(d.code === 0 || d.code === 1);
    assert.doesNotMatch(d.stderr, /\n\s+at /);
  });

  it("network create / ls / get / rm", async () => {
    const c = JSON.parse((await runCli(["sandbox", "network", "create", "api-net"], { env })).stdout);
    assert.equal(c.action, "network_created");
    assert.match(c.id, /^net-/);
    const ls = JSON.parse((await runCli(["sb", "network", "ls"], { env })).stdout);
    assert.ok(ls.some((n: { name: string }) => n.name === "api-net"));
    const t = await runCli(["sb", "network", "ls", "-o", "table"], { env });
    assert.match(t.stdout, /^net-\S+\s+api-net\s+0\s/m);
    const g = JSON.parse((await runCli(["sb", "network", "get", "api-net"], { env })).stdout);
    assert.equal(g.id, c.id);
    const noYes = await runCli(["sb", "network", "rm", "api-net", "-o", "table"], { env });
    assert.equal(noYes.code, 2);
    assert.match(noYes.stderr, /pass --yes/);
    const rm = JSON.parse((await runCli(["sb", "network", "rm", "api-net", "--yes"], { env })).stdout);
    assert.deepEqual(rm, { action: "network_deleted", id: c.id, name: "api-net" });
    const gone = await runCli(["sb", "network", "get", "api-net", "-o", "table"], { env });
    assert.equal(gone.code, 1);
    assert.equal(gone.stderr.trim().split("\n").length, 1);
  });

  it("template and disk commands show the server's refusal in one line", async () => {
    const df = path.join(home, "Dockerfile");
    fs.writeFileSync(df, "FROM nodeops/sandbox:debian\nCOPY . /\n");
    const sub = await runCli(["sb", "template", "submit", "my-tpl", "-f", df, "-o", "table"], { env });
    assert.equal(sub.code, 1);
    assert.match(sub.stderr, /^error: .*COPY is not allowed/);
    assert.equal(sub.stderr.trim().split("\n").length, 1);
    // accepted, then streamed until the build ends: here without an engine it fails, exit 1
    fs.writeFileSync(df, "FROM nodeops/sandbox:debian\nRUN echo hi\n");
    const built = await runCli(["sb", "template", "submit", "my-tpl", "-f", df, "-o", "table"], { env });
    assert.equal(built.code, 1, built.stderr);
    assert.match(built.stdout, /^build failed: no usable host/);
    assert.match(built.stderr, /^Submitted my-tpl \(tpl_\w+\)\nTemplate tpl_\w+ build failed\n$/);
    const json = await runCli(["sb", "template", "submit", "my-tpl2", "-f", df, "-o", "json"], { env });
    assert.equal(JSON.parse(json.stdout).status, "failed", "the final view");
    const dc = await runCli(
      [
        "sb",
        "disk",
        "create",
        "d1",
        "--bucket",
        "b",
        "--endpoint",
        "http://127.0.0.1:9",
        "--access-key",
        "a",
        "--secret-key",
        "s",
      ],
      { env },
    );
    assert.equal(dc.code, 1);
    assert.equal(JSON.parse(dc.stdout).error.code, "bad_request");
    const missing = await runCli(["sb", "disk", "create", "d1", "--bucket", "b", "-o", "table"], { env });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--endpoint is required/);
  });

  it("--api-key and CREATEOS_SANDBOX_API_KEY override the stored key", async () => {
    const r = await runCli(["sb", "list", "--api-key", "skp_wrong_key_000000000000", "-o", "table"], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: unauthorized: /);
    const e = await runCli(["sb", "list"], {
      env: { ...env, CREATEOS_SANDBOX_API_KEY: "skp_wrong_key_000000000000" },
    });
    assert.equal(e.code, 1);
    assert.equal(JSON.parse(e.stdout).error.code, "unauthorized");
  });

  it("interactive login in a terminal: masked key, URL, verified", async () => {
    const h = tempDir("cli-e2e-home2-");
    const t = new Tmux(tmuxCommand(["login"]), { ...env, HOME: h });
    try {
      await t.waitFor(/\? API key/);
      t.type(server.key);
      const masked = t.screen();
      assert.ok(!masked.includes(server.key), "the key is not echoed");
      t.send("Enter");
      await t.waitFor(/\? Server URL/);
      t.type(server.url);
      t.send("Enter");
      const screen = await t.waitFor(/\[exit \d+\]/);
      assert.match(screen, /Logged in to http:\/\/127\.0\.0\.1:\d+ as usr_/);
      assert.match(screen, /\[exit 0\]/);
      assert.equal(fs.readFileSync(path.join(h, ".createos", ".token"), "utf8").trim(), server.key);
    } finally {
      t.kill();
      fs.rmSync(h, { recursive: true, force: true });
    }
  });

  it("create wizard in a terminal walks the catalog and sends the request", async () => {
    const t = new Tmux(tmuxCommand(["sandbox", "create"]), env);
    try {
      const shapes = await t.waitFor(/\? Shape \(/);
      assert.match(shapes, /❯ s-1vcpu-256mb\s+1 vCPU, 256 MiB RAM, 10 GiB disk/);
      t.send("Down", "Enter");
      await t.waitFor(/\? Shape s-1vcpu-512mb/);
      await t.waitFor(/\? Name/);
      t.type("Bad Name");
      t.send("Enter");
      await t.waitFor(/lower-case letters, digits and -/);
      t.send("C-u");
      t.type("wiz-box");
      t.send("Enter");
      const images = await t.waitFor(/\? Base image \(/);
      assert.match(images, /devbox:1\s+default/);
      t.send("Enter");
      await t.waitFor(/\? Public HTTPS URL/);
      t.type("n");
      await t.waitFor(/\? Auto-pause/);
      t.type("5s");
      t.send("Enter");
      await t.waitFor(/between 1m and 24h/);
      t.send("C-u");
      t.type("15m");
      t.send("Enter");
      // This server has no VM engine: its answer to the create is the last line.
      const screen = await t.waitFor(/\[exit \d+\]/, 60_000);
      assert.match(screen, /error: server error \(503\): .*no/i);
      assert.match(screen, /\[exit 1\]/);
    } finally {
      t.kill();
    }
  });

  it("rm asks before deleting in a terminal; Ctrl-C cancels a prompt", async () => {
    const no = new Tmux(tmuxCommand(["sandbox", "rm", "some-box"]), env);
    try {
      await no.waitFor(/\? Delete some-box\? \(y\/N\)/);
      no.type("n");
      await no.waitFor(/Aborted; nothing deleted\.\n\[exit 1\]/);
    } finally {
      no.kill();
    }
    const yes = new Tmux(tmuxCommand(["sandbox", "rm", "some-box"]), env);
    try {
      await yes.waitFor(/\(y\/N\)/);
      yes.type("y");
      await yes.waitFor(/error: some-box: not found: sandbox "some-box"\n\[exit 1\]/);
    } finally {
      yes.kill();
    }
    const cancel = new Tmux(
      `${tmuxCommand(["sandbox", "rm", "some-box"])}; echo "[exit $?]"; stty -a | grep -q ' icanon ' && echo COOKED-MODE`,
      env,
    );
    try {
      await cancel.waitFor(/\(y\/N\)/);
      cancel.send("C-c");
      await cancel.waitFor(/cancelled\n\[exit 130\]\nCOOKED-MODE/);
    } finally {
      cancel.kill();
    }
  });

  it("logout forgets the key", async () => {
    assert.equal((await runCli(["logout"], { env })).code, 0);
    const r = await runCli(["sb", "list", "-o", "table"], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not logged in/);
  });
});
