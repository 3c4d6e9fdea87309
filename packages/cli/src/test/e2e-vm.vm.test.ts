/**
 * End-to-end: every seed-page command in the CLI issue's scope, run as the built `createos` binary
 * against the real `createos-sandbox serve` with real microVMs. Interactive commands (shell, the
 * create wizard, rm confirmation) run in a real terminal (tmux). One server, one sequence: VMs on
 * two shared cores do not want to run in parallel.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Server,
  Tmux,
  cleanEnv,
  requireTools,
  runBash,
  runCli,
  spawnCli,
  startServer,
  tempDir,
  tmuxCommand,
} from "./helpers.js";

requireTools("tmux", "ssh");

const json = (s: string) => JSON.parse(s);

describe("e2e against the real server with VMs", { timeout: 40 * 60_000 }, () => {
  let server: Server;
  let home: string;
  let work: string;
  let env: Record<string, string>;
  const cli = (args: string[], opts: { input?: string | Buffer; timeoutMs?: number } = {}) =>
    runCli(args, {
      env,
      timeoutMs: opts.timeoutMs ?? 300_000,
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
  /** The server's recent warnings and errors, for assertion messages. */
  const serverTrouble = () =>
    server.logs
      .filter((l) => /"level":"(warn|error)"/.test(l))
      .slice(-5)
      .join("\n");
  /** A successful JSON-mode command's document. */
  const ok = async (args: string[], input?: string) => {
    const r = await cli(args, input !== undefined ? { input } : {});
    assert.equal(
      r.code,
      0,
      `createos ${args.join(" ")} → ${r.code}\n${r.stdout}\n${r.stderr}\nserver: ${serverTrouble()}`,
    );
    return r.stdout.trim() ? json(r.stdout) : undefined;
  };

  const syncOnce = (local: string) =>
    ok(["sandbox", "sync", "e2e-box", "--local", local, "--remote", "/root/proj", "--once"]);

  before(async () => {
    server = await startServer({ engine: true, readyTimeoutMs: 30 * 60_000 });
    home = tempDir("cli-vm-home-");
    work = tempDir("cli-vm-work-");
    env = cleanEnv({ HOME: home, TERM: "xterm-256color" });
    fs.mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
    execFileSync("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "cli-e2e",
      "-f",
      path.join(home, ".ssh", "id_ed25519"),
    ]);
    const r = await runCli(["login", "--token", server.key, "--url", server.url], { env });
    assert.equal(r.code, 0, r.stderr);
  });

  after(async () => {
    if (server) {
      // Leave no VMs behind, whatever failed above.
      const ids = await runCli(["sb", "list", "--quiet"], { env }).catch(() => undefined);
      const list = ids?.stdout.split("\n").filter(Boolean) ?? [];
      if (list.length)
        await runCli(["sb", "rm", ...list, "--force"], { env, timeoutMs: 300_000 }).catch(() => undefined);
      await server.stop();
    }
    for (const d of [home, work]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it("seed page: the Non-interactive / CI usage block runs verbatim", async () => {
    const block = [
      "# Create headlessly",
      "createos sandbox create --shape s-1vcpu-256mb --name ci-box",
      "",
      "# Run a command and capture output",
      "createos sandbox exec ci-box -- npm test",
      "",
      "# JSON output",
      "createos sandbox list --output json | jq '.[].id'",
      "",
      "# Delete without prompt",
      "createos sandbox rm ci-box --force",
    ].join("\n");
    // Verbatim: the block is sourced unchanged; an ERR trap only reports each failing command's
    // status, so `exec`'s pass-through of npm's exit code is visible without stopping the script.
    const file = path.join(work, "ci.sh");
    fs.writeFileSync(file, `${block}\n`);
    const r = await runBash(
      `trap 'echo "[status $? from: $BASH_COMMAND]" >&2' ERR; source ${JSON.stringify(file)}`,
      env,
    );
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /"action": "created"/, `${r.stdout}\nserver: ${serverTrouble()}`);
    assert.match(r.stdout, /"name": "ci-box"/);
    assert.match(r.stdout, /^"sb-[0-9a-z]{26}"$/m, "jq printed the id");
    assert.match(r.stdout, /"action": "deleted"/);
    // There is no package.json in the fresh sandbox, so npm fails — and its status is ours.
    const npm = /\[status (\d+) from: createos sandbox exec ci-box -- npm test\]/.exec(r.stderr);
    assert.ok(npm, r.stderr);
    assert.notEqual(npm[1], "0");
    assert.match(r.stderr, /npm (ERR!|error)/);
    assert.equal(r.stderr.match(/\[status /g)?.length, 1, "only npm's exit was non-zero");
  });

  let id = "";
  it("create with the seed flags; list and get show it", async () => {
    const doc = await ok([
      "sandbox",
      "create",
      "--shape",
      "s-1vcpu-256mb",
      "--name",
      "e2e-box",
      "--env",
      "GREETING=hello",
      "--ssh-key",
      path.join(home, ".ssh", "id_ed25519.pub"),
      "--auto-pause",
      "10m",
      "--rootfs",
      "devbox:1",
      "--disk-mib",
      "10240",
    ]);
    assert.equal(doc.action, "created");
    assert.match(doc.id, /^sb-[0-9a-z]{26}$/);
    assert.equal(doc.name, "e2e-box");
    assert.equal(doc.shape, "s-1vcpu-256mb");
    assert.equal(doc.shell_command, "createos sandbox shell e2e-box");
    id = doc.id;

    const list = await ok(["sandbox", "list"]);
    assert.ok(
      list.some(
        (s: { id: string; name: string; status: string }) =>
          s.id === id && s.name === "e2e-box" && s.status === "running",
      ),
    );
    const quiet = await cli(["sb", "list", "--quiet"]);
    assert.ok(quiet.stdout.split("\n").includes(id));
    const table = await cli(["sb", "list", "-o", "table", "--wide"]);
    assert.match(table.stdout, /^ID\s+NAME\s+STATUS\s+SHAPE\s+IP\s+CREATED\s+IMAGE/m);
    assert.match(table.stdout, new RegExp(`^${id}\\s+e2e-box\\s+running\\s+s-1vcpu-256mb`, "m"));
    assert.deepEqual(await ok(["sb", "list", "--status", "paused"]), []);

    const got = await ok(["sandbox", "get", "e2e-box"]);
    assert.equal(got.id, id);
    assert.equal(got.auto_pause_after_seconds, 600);
    assert.deepEqual(got.envs, ["GREETING"]);
    const human = await cli(["sb", "get", id, "-o", "table"]);
    for (const k of ["Status:", "Size:", "IP:", "Public URL:", "Firewall:", "Created:", "Auto-pause:"])
      assert.ok(human.stdout.includes(k), k);
  });

  it("flags the server cannot satisfy come back as one clear line", async () => {
    const r = await cli([
      "sb",
      "create",
      "--shape",
      "s-1vcpu-256mb",
      "--network",
      "no-such-net",
      "-o",
      "table",
    ]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^error: /);
  });

  it("exec: exit codes, streams, stdin, --env, --stream, --output json", async () => {
    const r = await cli(["sandbox", "exec", "e2e-box", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    const s = await cli([
      "sb",
      "exec",
      "e2e-box",
      "-s",
      "--",
      "sh",
      "-c",
      "echo one; sleep 1; echo two; exit 3",
    ]);
    assert.equal(s.code, 3);
    assert.equal(s.stdout, "one\ntwo\n");
    const piped = await cli(["sb", "exec", "e2e-box", "--", "cat"], { input: "piped stdin\n" });
    assert.equal(piped.stdout, "piped stdin\n");
    const stdinFile = path.join(work, "in.txt");
    fs.writeFileSync(stdinFile, "from a file\n");
    assert.equal(
      (await cli(["sb", "exec", "e2e-box", "--stdin", stdinFile, "--", "cat"])).stdout,
      "from a file\n",
    );
    const e = await cli(["sb", "exec", "e2e-box", "--", "sh", "-c", "echo $GREETING"]);
    assert.equal(e.stdout, "hello\n");
    const e2 = await cli([
      "sb",
      "exec",
      "e2e-box",
      "--env",
      "GREETING=bye",
      "--",
      "sh",
      "-c",
      "echo $GREETING",
    ]);
    assert.equal(e2.stdout, "bye\n");
    const j = await cli(["sb", "exec", "e2e-box", "--output", "json", "--", "sh", "-c", "echo hi; exit 2"]);
    assert.equal(j.code, 2);
    assert.deepEqual(json(j.stdout), { sandbox_id: id, exit_code: 2, stdout: "hi\n", stderr: "" });
    const uname = await cli(["sandbox", "exec", "e2e-box", "--", "uname", "-a"]);
    assert.equal(uname.code, 0);
    assert.match(uname.stdout, /Linux/);
  });

  it("push and pull: files, stdin/stdout, the absolute-path rule", async () => {
    const src = path.join(work, "blob.bin");
    const data = randomBytes(3 * 1024 * 1024 + 17);
    fs.writeFileSync(src, data);
    const p = await ok(["sandbox", "push", "e2e-box", src, "/root/up/blob.bin"]);
    assert.deepEqual(p, { action: "pushed", id, remote_path: "/root/up/blob.bin", bytes: data.length });
    const dst = path.join(work, "back.bin");
    const g = await ok(["sandbox", "pull", "e2e-box", "/root/up/blob.bin", dst]);
    assert.equal(g.bytes, data.length);
    assert.ok(fs.readFileSync(dst).equals(data));
    const sum = await cli(["sb", "exec", "e2e-box", "--", "sha256sum", "/root/up/blob.bin"]);
    assert.equal(
      sum.stdout.split(" ")[0],
      execFileSync("sha256sum", [src], { encoding: "utf8" }).split(" ")[0],
    );

    await ok(["sb", "push", "e2e-box", "-", "/tmp/from-stdin.txt"], "tar-like bytes\n");
    const out = await cli(["sb", "pull", "e2e-box", "/tmp/from-stdin.txt", "-"]);
    assert.equal(out.code, 0);
    assert.equal(out.stdout, "tar-like bytes\n");
    // Into a directory: keeps the remote name.
    await ok(["sb", "pull", "e2e-box", "/tmp/from-stdin.txt", work]);
    assert.equal(fs.readFileSync(path.join(work, "from-stdin.txt"), "utf8"), "tar-like bytes\n");

    const rel = await cli(["sb", "push", "e2e-box", src, "root/x", "-o", "table"]);
    assert.equal(rel.code, 2);
    assert.match(rel.stderr, /remote path must be absolute/);
    const missing = await cli([
      "sb",
      "pull",
      "e2e-box",
      "/nope/missing.txt",
      path.join(work, "m.txt"),
      "-o",
      "table",
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /not found: \/nope\/missing\.txt/);
    assert.equal(fs.existsSync(path.join(work, "m.txt")), false, "no partial file");
  });

  it("edit: auto-pause, SSH keys, ingress", async () => {
    const a = await ok(["sandbox", "edit", "e2e-box", "--auto-pause", "30m"]);
    assert.deepEqual(a, { action: "auto_pause_updated", id, auto_pause_after_seconds: 1800 });
    const off = await ok(["sandbox", "edit", "e2e-box", "--auto-pause", "off"]);
    assert.equal(off.auto_pause_after_seconds, null);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(work, "second")]);
    const k = await ok(["sandbox", "edit", "e2e-box", "--add-ssh-key", path.join(work, "second.pub")]);
    assert.equal(k.action, "ssh_keys_added");
    assert.equal(k.count, 2);
    const on = await ok(["sandbox", "edit", "e2e-box", "--ingress", "on"]);
    assert.equal(on.action, "ingress_updated");
    assert.equal(on.ingress_enabled, true);
    assert.equal((await ok(["sb", "get", "e2e-box"])).ingress_enabled, true);
    const offIngress = await ok(["sb", "edit", "e2e-box", "--ingress", "off"]);
    assert.equal(offIngress.ingress_enabled, false);
    // Several changes at once: one document listing each.
    const both = await ok(["sb", "edit", "e2e-box", "--ingress", "off", "--auto-pause", "1h"]);
    assert.equal(both.action, "updated");
    assert.deepEqual(
      both.changes.map((c: { action: string }) => c.action),
      ["ingress_updated", "auto_pause_updated"],
    );
  });

  it("edit without flags in a terminal: the menu", async () => {
    const t = new Tmux(tmuxCommand(["sandbox", "edit", "e2e-box"]), env);
    try {
      await t.waitFor(/\? Edit e2e-box \(sb-/);
      t.send("Down", "Down", "Enter"); // "Set auto-pause"
      await t.waitFor(/\? Auto-pause after/);
      t.type("20m");
      t.send("Enter");
      await t.waitFor(/Auto-pause after 20m idle\n\[exit 0\]/);
    } finally {
      t.kill();
    }
    assert.equal((await ok(["sb", "get", "e2e-box"])).auto_pause_after_seconds, 1200);
  });

  it("push and pull show a progress bar for large files on a terminal", async () => {
    const big = path.join(work, "big.bin");
    fs.writeFileSync(big, randomBytes(8 * 1024 * 1024));
    const t = new Tmux(
      `${tmuxCommand(["sandbox", "push", "e2e-box", big, "/root/big.bin"])} && ${tmuxCommand(["sandbox", "pull", "e2e-box", "/root/big.bin", path.join(work, "big2.bin")])}`,
      env,
    );
    try {
      const screen = await t.waitFor(/\[exit \d+\]/, 300_000);
      assert.match(screen, /Uploading big\.bin \[#{24}\] 100%\s+8\.0 MiB\/8\.0 MiB/);
      assert.match(screen, /Downloading big\.bin .*8\.0 MiB/);
      assert.match(screen, /\[exit 0\]/);
    } finally {
      t.kill();
    }
    assert.ok(fs.readFileSync(big).equals(fs.readFileSync(path.join(work, "big2.bin"))));
  });

  it("network attach / get / detach / rm (members detached first)", async () => {
    const net = await ok(["sandbox", "network", "create", "e2e-net"]);
    const att = await ok(["sandbox", "network", "attach", "e2e-box", "e2e-net"]);
    assert.deepEqual(att, { action: "network_attached", id, network: "e2e-net" });
    const got = await ok(["sb", "network", "get", "e2e-net"]);
    assert.deepEqual(
      got.members.map((m: { sandbox_id: string }) => m.sandbox_id),
      [id],
    );
    const det = await ok(["sandbox", "network", "detach", "e2e-box", "e2e-net", "--yes"]);
    assert.deepEqual(det, { action: "network_detached", id, network: net.id });
    await ok(["sb", "network", "attach", "e2e-box", net.id]);
    const rm = await ok(["sandbox", "network", "rm", "e2e-net", "--yes"]);
    assert.equal(rm.action, "network_deleted");
    assert.equal((await cli(["sb", "network", "get", "e2e-net"])).code, 1);
  });

  it("firewall show / set / clear", async () => {
    const none = await cli(["sb", "firewall", "show", "e2e-box", "-o", "table"]);
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /all outbound traffic is allowed/);
    assert.match(none.stdout, /^Bandwidth: /m);
    const set = await ok(["sandbox", "firewall", "set", "e2e-box", "pypi.org", "github.com"]);
    assert.deepEqual(set.egress, ["pypi.org", "github.com"]);
    assert.deepEqual((await ok(["sb", "firewall", "show", "e2e-box"])).egress, ["pypi.org", "github.com"]);
    const shown = await cli(["sb", "get", "e2e-box", "-o", "table"]);
    assert.match(shown.stdout, /Firewall:\s+pypi\.org, github\.com/);
    const bad = await cli(["sb", "firewall", "set", "e2e-box", "not a rule!", "-o", "table"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: /);
    assert.deepEqual((await ok(["sandbox", "firewall", "clear", "e2e-box", "--yes"])).egress, []);
    // off a terminal, as in a script, clear needs no flag
    await ok(["sandbox", "firewall", "set", "e2e-box", "pypi.org"]);
    const plain = await cli(["sb", "firewall", "clear", "e2e-box", "-o", "table"]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /cleared: all outbound traffic allowed/);
    assert.deepEqual((await ok(["sb", "firewall", "show", "e2e-box"])).egress, []);
  });

  it("tunnel: prints tunnel_started, forwards TCP, stops on Ctrl-C", async () => {
    await ok([
      "sb",
      "exec",
      "e2e-box",
      "--",
      "sh",
      "-c",
      "mkdir -p /srv/t && echo tunnel-ok > /srv/t/index.html && cd /srv/t && (setsid nohup python3 -m http.server 8000 >/dev/null 2>&1 </dev/null &) && sleep 1",
    ]).catch(() => undefined);
    await cli([
      "sb",
      "exec",
      "e2e-box",
      "--",
      "sh",
      "-c",
      "for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/8000) 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
    ]);
    const t = spawnCli(
      ["sandbox", "tunnel", "e2e-box", "--local", "0", "--remote", "8000", "--output", "json"],
      env,
    );
    const text = await t.waitFor(/\}\s*$/);
    const doc = json(text);
    assert.equal(doc.action, "tunnel_started");
    assert.equal(doc.id, id);
    assert.equal(doc.remote_port, 8000);
    const port = Number(String(doc.listen_addr).split(":").pop());
    assert.match(doc.listen_addr, /^127\.0\.0\.1:\d+$/);
    const res = await fetch(`http://127.0.0.1:${port}/index.html`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "tunnel-ok\n");
    t.signal("SIGINT");
    assert.equal(await t.exit, 0);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`), "the listener is gone");
  });

  it("sync: --once reconciles both ways; watch mode carries edits until Ctrl-C", async () => {
    const local = path.join(work, "proj");
    fs.mkdirSync(path.join(local, "src"), { recursive: true });
    fs.writeFileSync(path.join(local, "README.md"), "local readme\n");
    fs.writeFileSync(path.join(local, "src", "main.py"), "print('hi')\n");
    await ok([
      "sb",
      "exec",
      "e2e-box",
      "--",
      "sh",
      "-c",
      "mkdir -p /root/proj && echo remote-only > /root/proj/remote.txt",
    ]);
    const once = await syncOnce(local);
    assert.equal(once.action, "synced");
    assert.equal(once.pushed, 2);
    assert.equal(once.pulled, 1);
    assert.equal(fs.readFileSync(path.join(local, "remote.txt"), "utf8"), "remote-only\n");
    assert.equal(
      (await cli(["sb", "exec", "e2e-box", "--", "cat", "/root/proj/src/main.py"])).stdout,
      "print('hi')\n",
    );

    const s = spawnCli(
      ["sb", "sync", "e2e-box", "--local", local, "--remote", "/root/proj", "-o", "json"],
      env,
    );
    await s.waitFor(/Watching/, "stderr", 120_000);
    fs.writeFileSync(path.join(local, "src", "new.txt"), "made locally\n");
    await s.waitFor(/→ src\/new\.txt/, "stderr");
    assert.equal(
      (await cli(["sb", "exec", "e2e-box", "--", "cat", "/root/proj/src/new.txt"])).stdout,
      "made locally\n",
    );
    await cli([
      "sb",
      "exec",
      "e2e-box",
      "--",
      "sh",
      "-c",
      "echo made remotely > /root/proj/remote2.txt && rm /root/proj/README.md",
    ]);
    await s.waitFor(/← remote2\.txt/, "stderr");
    await s.waitFor(/README\.md \(deleted in the sandbox\)/, "stderr");
    assert.equal(fs.readFileSync(path.join(local, "remote2.txt"), "utf8"), "made remotely\n");
    assert.equal(fs.existsSync(path.join(local, "README.md")), false);
    s.signal("SIGINT");
    assert.equal(await s.exit, 0);
    const summary = json(s.stdout());
    assert.equal(summary.action, "sync_stopped");
    assert.ok(summary.pushed >= 1 && summary.pulled >= 1);
  });

  it("sync conflict: the newer side wins, the other copy is kept", async () => {
    const local = path.join(work, "proj");
    // Both sides change the same file since the last sync; the sandbox's edit is newer.
    fs.writeFileSync(path.join(local, "src", "main.py"), "local edit\n");
    fs.utimesSync(
      path.join(local, "src", "main.py"),
      new Date(Date.now() - 3600_000),
      new Date(Date.now() - 3600_000),
    );
    await cli(["sb", "exec", "e2e-box", "--", "sh", "-c", "echo remote edit > /root/proj/src/main.py"]);
    const once = await syncOnce(local);
    assert.equal(once.conflicts, 1);
    assert.equal(fs.readFileSync(path.join(local, "src", "main.py"), "utf8"), "remote edit\n");
    const kept = fs.readdirSync(path.join(local, "src")).find((f) => f.startsWith("main.py.conflict-"));
    assert.ok(kept, "the losing copy is kept");
    assert.equal(fs.readFileSync(path.join(local, "src", kept as string), "utf8"), "local edit\n");
  });

  it("shell: keyless PTY in a real terminal, resize, clean exit and terminal restore", async () => {
    const t = new Tmux(
      `${tmuxCommand(["sandbox", "shell", "e2e-box"])}; echo "[exit $?]"; stty -a | grep -q ' icanon ' && echo COOKED-MODE`,
      env,
    );
    try {
      await t.waitFor(/[#$] ?$/m, 60_000);
      t.type("echo $((6*7)) $(tty)");
      t.send("Enter");
      await t.waitFor(/^42 \/dev\/pts\/\d+/m);
      t.type("stty size");
      t.send("Enter");
      await t.waitFor(/^40 120$/m);
      t.resize(100, 30);
      await new Promise((r) => setTimeout(r, 500));
      t.type("stty size");
      t.send("Enter");
      await t.waitFor(/^30 100$/m);
      // Ctrl-C goes to the remote shell, not to the CLI.
      t.type("sleep 30");
      t.send("Enter");
      // Give the guest shell time to start `sleep` so the ^C reaches it, not bash mid-fork.
      await new Promise((r) => setTimeout(r, 2000));
      t.send("C-c");
      t.type("echo still-here");
      t.send("Enter");
      await t.waitFor(/^still-here$/m, 20_000);
      t.type("exit");
      t.send("Enter");
      const screen = await t.waitFor(/\[exit 0\][\s\S]*COOKED-MODE/);
      assert.match(screen, /COOKED-MODE/);
    } finally {
      t.kill();
    }
  });

  it("shell --ssh / -i: key upload, sshd, system ssh through a tunnel", async () => {
    const t = new Tmux(
      `${tmuxCommand(["sandbox", "shell", "e2e-box", "-i", path.join(home, ".ssh", "id_ed25519")])}; echo "[exit $?]"`,
      env,
    );
    try {
      await t.waitFor(/[#$] ?$/m, 120_000);
      t.type("echo ssh-$((40+2)) $SSH_CONNECTION | cut -c1-12");
      t.send("Enter");
      await t.waitFor(/^ssh-42 127\.0/m);
      t.type("exit 5");
      t.send("Enter");
      await t.waitFor(/\[exit 5\]/, 30_000);
    } finally {
      t.kill();
    }
  });

  it("pause, resume and fork (with spinners off a terminal, JSON results)", async () => {
    const p = await ok(["sandbox", "pause", "e2e-box"]);
    assert.deepEqual(p, { action: "paused", id, name: "e2e-box", status: "paused" });
    const onPaused = await cli(["sb", "exec", "e2e-box", "-o", "table", "--", "true"]);
    assert.equal(onPaused.code, 1);

    const f1 = await ok(["sandbox", "fork", "e2e-box", "--paused"]);
    assert.equal(f1.action, "forked");
    assert.equal(f1.source_id, id);
    assert.equal(f1.status, "paused");
    const f2 = await ok(["sandbox", "fork", "e2e-box"]);
    assert.equal(f2.status, "running");
    assert.equal(
      (await cli(["sb", "exec", f2.id, "--", "cat", "/root/up/blob.bin"])).code,
      0,
      "the fork has the files",
    );

    const r = await ok(["sandbox", "resume", "e2e-box"]);
    assert.equal(r.status, "running");
    assert.equal(
      (await cli(["sb", "exec", "e2e-box", "--", "cat", "/tmp/from-stdin.txt"])).stdout,
      "tar-like bytes\n",
    );

    // rm of several refs, one of them unknown: the others go, exit 1, per-ref results.
    const rm = await cli(["sandbox", "rm", f1.id, f2.id, "no-such-box", "--force"]);
    assert.equal(rm.code, 1);
    const doc = json(rm.stdout);
    assert.equal(doc.action, "deleted");
    assert.equal(doc.deleted, 2);
    assert.equal(doc.failed, 1);
    assert.deepEqual(doc.results[2], {
      ref: "no-such-box",
      deleted: false,
      error: 'not found: sandbox "no-such-box"',
    });
  });

  it("create wizard in a terminal", async () => {
    const t = new Tmux(tmuxCommand(["sandbox", "create"]), env);
    try {
      await t.waitFor(/\? Shape/);
      t.send("Enter"); // the first shape
      await t.waitFor(/\? Name/);
      t.type("wiz-box");
      t.send("Enter");
      await t.waitFor(/\? Base image/);
      t.send("Enter"); // the default image is preselected
      await t.waitFor(/\? SSH public keys/);
      t.send("Space");
      t.send("Enter");
      await t.waitFor(/\? Public HTTPS URL/);
      t.type("n");
      await t.waitFor(/\? Auto-pause/);
      t.type("15m");
      t.send("Enter");
      const screen = await t.waitFor(/\[exit \d+\]/, 300_000);
      assert.match(screen, /Open a shell: createos sandbox shell wiz-box/);
      assert.match(screen, /\[exit 0\]/);
    } finally {
      t.kill();
    }
    const got = await ok(["sb", "get", "wiz-box"]);
    assert.equal(got.auto_pause_after_seconds, 900);
    assert.equal(got.ssh_pubkeys.length, 1);
  });

  it("rm asks for confirmation in a terminal", async () => {
    const no = new Tmux(tmuxCommand(["sandbox", "rm", "wiz-box"]), env);
    try {
      await no.waitFor(/Delete wiz-box\? \(y\/N\)/);
      no.type("n");
      await no.waitFor(/Aborted; nothing deleted\.[\s\S]*\[exit 1\]/);
    } finally {
      no.kill();
    }
    const yes = new Tmux(tmuxCommand(["sandbox", "rm", "wiz-box", "e2e-box"]), env);
    try {
      await yes.waitFor(/Delete 2 sandboxes \(wiz-box, e2e-box\)\? \(y\/N\)/);
      yes.type("y");
      const screen = await yes.waitFor(/\[exit \d+\]/, 120_000);
      assert.match(screen, /Deleted wiz-box/);
      assert.match(screen, /Deleted e2e-box/);
      assert.match(screen, /\[exit 0\]/);
    } finally {
      yes.kill();
    }
    assert.deepEqual(await ok(["sb", "list"]), []);
  });
});
