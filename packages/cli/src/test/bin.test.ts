import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { cleanEnv, runCli, tempDir } from "./helpers.js";

const home = tempDir("cli-home-");
const env = cleanEnv({ HOME: home });
after(() => fs.rmSync(home, { recursive: true, force: true }));

const SEED_COMMANDS = [
  "create",
  "list",
  "get",
  "edit",
  "pause",
  "resume",
  "fork",
  "rm",
  "exec",
  "shell",
  "push",
  "pull",
  "sync",
  "tunnel",
  "network create",
  "network ls",
  "network attach",
  "network detach",
  "network rm",
  "firewall show",
  "firewall set",
  "firewall clear",
  "disk create",
  "disk ls",
  "disk attach",
  "disk detach",
  "disk rm",
  "template submit",
  "template ls",
  "template show",
  "template logs",
  "template rm",
  "shapes",
  "rootfs",
];

describe("help", () => {
  it("createos --help lists the top-level commands", async () => {
    const r = await runCli(["--help"], { env });
    assert.equal(r.code, 0);
    for (const w of ["sandbox", "login", "logout", "completion", "GLOBAL FLAGS", "--sandbox-api-url"])
      assert.ok(r.stdout.includes(w), w);
  });

  it("createos sandbox --help lists every seed command, with examples", async () => {
    const r = await runCli(["sandbox", "--help"], { env });
    assert.equal(r.code, 0);
    for (const c of SEED_COMMANDS) assert.match(r.stdout, new RegExp(`^  ${c} `, "m"), c);
    assert.match(r.stdout, /EXAMPLES\n {2}createos login/);
    assert.match(r.stdout, /ALIASES\n {2}sb/);
  });

  it("every command answers --help with usage, flags and examples", async () => {
    for (const c of SEED_COMMANDS) {
      const r = await runCli(["sb", ...c.split(" "), "--help"], { env });
      assert.equal(r.code, 0, c);
      assert.match(r.stdout, /USAGE\n {2}createos sandbox /, c);
      assert.match(r.stdout, /EXAMPLES\n {2}createos sandbox /, c);
    }
  });

  it("create --help documents every flag of the seed table", async () => {
    const r = await runCli(["sandbox", "create", "-h"], { env });
    for (const f of [
      "--shape",
      "--name",
      "--rootfs",
      "--disk-mib",
      "--ssh-key",
      "--env",
      "--ingress",
      "--network",
      "--disk",
      "--egress",
      "--auto-pause",
    ]) {
      assert.ok(r.stdout.includes(f), f);
    }
  });

  it("help works as a command and after --", async () => {
    const r = await runCli(["help", "sb", "exec"], { env });
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--stream/);
  });
});

describe("usage errors exit 2", () => {
  const cases: Array<[string[], RegExp]> = [
    [["sandbox", "list", "--bogus"], /unknown flag --bogus/],
    [["sandbox", "frobnicate"], /unknown command "frobnicate"/],
    [["nope"], /unknown command "nope"/],
    [["sandbox", "push", "box", "./f"], /missing argument/],
    [["sandbox", "push", "box", "./f", "relative/path"], /remote path must be absolute/],
    [["sandbox", "pull", "box", "etc/hosts", "-"], /remote path must be absolute/],
    [["sandbox", "create"], /--shape is required/],
    [["sandbox", "create", "--shape", "s-1vcpu-256mb", "--auto-pause", "5s"], /between 1m and 24h/],
    [["sandbox", "create", "--shape", "s-1vcpu-256mb", "--auto-pause", "soon"], /invalid duration/],
    [["sandbox", "create", "--shape", "s", "--env", "NOEQUALS"], /KEY=VALUE/],
    [["sandbox", "create", "--shape", "s", "--disk", "bucket-only"], /name:\/mount\/path/],
    [["sandbox", "list", "--status", "sleeping"], /invalid value "sleeping"/],
    [["sandbox", "list", "--limit", "x"], /whole number/],
    [["sandbox", "rm", "box"], /pass --force/],
    [["sandbox", "exec", "box"], /missing command/],
    [["sandbox", "tunnel", "box"], /--remote <port> is required/],
    [["sandbox", "tunnel", "box", "--remote", "70000"], /port number/],
    [["sandbox", "edit", "box", "--ingress", "maybe"], /on or off/],
    [["sandbox", "sync", "box", "--local", "/", "--remote", "/root/w"], /refusing to sync \//],
    [["sandbox", "sync", "box", "--local", "/tmp/x", "--remote", "/etc"], /system directory/],
    [["sandbox", "sync", "box", "--local", "/tmp/x", "--remote", "rel"], /must be absolute/],
    [["-o", "yaml", "sandbox", "list"], /invalid output format/],
    [["completion", "tcsh"], /unsupported shell/],
    [["login"], /pass --token/],
  ];
  for (const [args, re] of cases) {
    it(args.join(" "), async () => {
      // Table mode so the message lands on stderr; a later -o in args wins.
      const r = await runCli(["-o", "table", ...args], { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
    });
  }

  it("in JSON mode the error is a JSON document on stdout", async () => {
    const r = await runCli(["sandbox", "create"], { env });
    assert.equal(r.code, 2);
    assert.deepEqual(JSON.parse(r.stdout), {
      error: { code: "usage_error", message: "--shape is required (see `createos sandbox shapes`)" },
    });
  });

  it("the sync refusals cover $HOME and credential dirs (and --force lifts the latter)", async () => {
    fs.mkdirSync(path.join(home, ".ssh"), { recursive: true });
    let r = await runCli(["-o", "table", "sb", "sync", "b", "--local", home, "--remote", "/root/w"], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /home directory itself/);
    r = await runCli(
      ["-o", "table", "sb", "sync", "b", "--local", path.join(home, ".ssh"), "--remote", "/root/w"],
      { env },
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /holds credentials/);
    r = await runCli(
      [
        "-o",
        "table",
        "sb",
        "sync",
        "b",
        "--local",
        path.join(home, ".ssh"),
        "--remote",
        "/root/w",
        "--force",
      ],
      { env },
    );
    assert.equal(r.code, 1, "passes the refusal, then fails for lack of credentials");
    assert.match(r.stderr, /not logged in/);
  });
});

describe("failures exit 1 with one line", () => {
  it("not logged in", async () => {
    const r = await runCli(["-o", "table", "sandbox", "list"], { env });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.match(r.stderr, /^error: not logged in: run `createos login`/);
  });

  it("an unreachable server: one line, no stack trace; --debug adds it", async () => {
    const args = [
      "--sandbox-api-url",
      "http://127.0.0.1:9",
      "--api-key",
      "skp_x",
      "sb",
      "list",
      "-o",
      "table",
    ];
    const r = await runCli(args, { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    const d = await runCli([...args, "--debug"], { env });
    assert.equal(d.code, 1);
    assert.match(d.stderr, /→ GET http:\/\/127\.0\.0\.1:9\/v1\/sandboxes/);
    assert.match(d.stderr, /\n\s+at /);
  });
});

describe("login / logout", () => {
  it("stores the key and URL with private modes, honouring HOME", async () => {
    const r = await runCli(
      ["login", "--token", "skp_secret_123456", "--url", "http://127.0.0.1:9/", "--no-verify", "-o", "json"],
      { env },
    );
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.action, "logged_in");
    assert.equal(doc.api_url, "http://127.0.0.1:9");
    const dir = path.join(home, ".createos");
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(dir, ".token")).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(dir, "config.json")).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(path.join(dir, ".token"), "utf8").trim(), "skp_secret_123456");
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")), {
      api_url: "http://127.0.0.1:9",
    });
    assert.ok(!r.stdout.includes("skp_secret_123456"), "the key is never printed");

    // The stored URL and key are used by later commands.
    const list = await runCli(["-o", "table", "--debug", "sb", "list", "--all"], { env });
    assert.match(list.stderr, /http:\/\/127\.0\.0\.1:9\/v1\/sandboxes/);
    // The environment beats the file.
    const envUrl = await runCli(["-o", "table", "--debug", "sb", "list", "--all"], {
      env: { ...env, CREATEOS_SANDBOX_BASE_URL: "http://127.0.0.1:7" },
    });
    assert.match(envUrl.stderr, /http:\/\/127\.0\.0\.1:7\/v1\/sandboxes/);

    const out = await runCli(["logout", "-o", "json"], { env });
    assert.equal(out.code, 0);
    assert.equal(JSON.parse(out.stdout).action, "logged_out");
    assert.equal(fs.existsSync(path.join(dir, ".token")), false);
    assert.equal(fs.existsSync(path.join(dir, "config.json")), true, "the URL is kept");
    const again = await runCli(["logout"], { env });
    assert.equal(again.code, 0, "logout is idempotent");
  });

  it("reads the token from stdin with --token -", async () => {
    const r = await runCli(["login", "--token", "-", "--no-verify"], { env, input: "skp_from_stdin\n" });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(home, ".createos", ".token"), "utf8").trim(), "skp_from_stdin");
    await runCli(["logout"], { env });
  });
});

describe("completion", () => {
  it("prints scripts for bash, zsh and fish", async () => {
    for (const sh of ["bash", "zsh", "fish"]) {
      const r = await runCli(["completion", sh], { env });
      assert.equal(r.code, 0);
      assert.match(r.stdout, /createos/);
    }
  });
});
