import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { bool, str } from "../../framework/args.js";
import type { Command, Context } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { sh, shq } from "../../lib/api.js";
import { homeDir } from "../../lib/config.js";
import type { Sandbox } from "../../lib/sdk.js";
import { boxArg, label, requireRunning } from "./common.js";
import { ensureKeyListed, gatewaySshArgs, identityArgs, parseGateway } from "./gateway.js";

/** Keyless PTY through the control plane (protocol.md §3.4). */
async function keylessShell(ctx: Context, sb: Sandbox): Promise<number> {
  const { stdin, stdout } = ctx.streams;
  const size = () => ({ rows: stdout.rows || 24, cols: stdout.columns || 80 });
  const session = await sb.shell(size());
  const wasRaw = stdin.isTTY ? stdin.isRaw : false;
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (stdin.isTTY) stdin.setRawMode(wasRaw);
    stdin.pause();
  };
  // Whatever ends the session — remote exit, a signal, a crash — the terminal must come back sane.
  process.once("exit", restore);
  const onSignal = (sig: NodeJS.Signals) => {
    restore();
    session.close();
    process.exit(sig === "SIGINT" ? 130 : 128 + (sig === "SIGTERM" ? 15 : 1));
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  const onResize = () => {
    const s = size();
    session.resize(s.rows, s.cols);
  };
  // Node turns SIGWINCH into the terminal stream's "resize" event.
  stdout.on("resize", onResize);
  session.onData((chunk) => stdout.write(chunk));
  if (stdin.isTTY) stdin.setRawMode(true);
  const onInput = (d: Buffer) => session.write(d);
  stdin.on("data", onInput);
  // Piped input: when it ends, send EOF (Ctrl-D) the way a terminal would.
  stdin.once("end", () => session.write("\x04"));
  stdin.resume();
  try {
    await session.closed;
  } finally {
    stdin.off("data", onInput);
    stdout.off("resize", onResize);
    process.off("SIGTERM", onSignal);
    process.off("SIGHUP", onSignal);
    restore();
  }
  return 0;
}

function defaultKey(env: NodeJS.ProcessEnv): string | undefined {
  for (const name of ["id_ed25519", "id_ecdsa", "id_rsa"]) {
    const p = path.join(homeDir(env), ".ssh", name);
    if (fs.existsSync(p) && fs.existsSync(`${p}.pub`)) return p;
  }
  return undefined;
}

/** Shell script that authorises the uploaded key and makes sure sshd runs; exit 100 = no sshd. */
export function sshPrepScript(user: string, keyFile: string): string {
  const home = user === "root" ? "/root" : `/home/${user}`;
  return [
    "set -e",
    "[ -x /usr/sbin/sshd ] || exit 100",
    `H=${shq(home)}; K=${shq(keyFile)}`,
    `if [ ${shq(user)} != root ] && ! id ${shq(user)} >/dev/null 2>&1; then echo "no such user: ${user}" >&2; exit 101; fi`,
    'mkdir -p "$H/.ssh" && chmod 700 "$H/.ssh"',
    'touch "$H/.ssh/authorized_keys" && chmod 600 "$H/.ssh/authorized_keys"',
    'grep -qxF "$(cat "$K")" "$H/.ssh/authorized_keys" || cat "$K" >> "$H/.ssh/authorized_keys"',
    'rm -f "$K"',
    user === "root" ? "true" : `chown -R ${shq(user)} "$H/.ssh"`,
    "mkdir -p /run/sshd && chmod 755 /run/sshd",
    "ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null",
    // A second sshd fails to bind when one already listens; that is the outcome we want anyway.
    "/usr/sbin/sshd >/dev/null 2>&1 || true",
  ].join("\n");
}

/** Key upload + sshd prep + a loopback listener tunnelled to guest :22 (protocol.md §3.7). */
export async function prepareSsh(
  ctx: Context,
  sb: Sandbox,
  keyPath: string,
  user: string,
): Promise<{ port: number; close: () => unknown }> {
  let pub: string;
  try {
    pub = fs.readFileSync(`${keyPath}.pub`, "utf8").trim();
  } catch {
    throw new UsageError(`cannot read ${keyPath}.pub (the public half of -i ${keyPath})`, ctx.commandPath);
  }
  const tmp = `/tmp/.createos-key-${randomBytes(6).toString("hex")}.pub`;
  await sb.files.upload(tmp, `${pub}\n`);
  const prep = await sh(sb, sshPrepScript(user, tmp));
  if (prep.exit_code === 100)
    throw new CliError(`${label(sb.data)} has no SSH server (/usr/sbin/sshd); use the keyless shell instead`);
  if (prep.exit_code !== 0)
    throw new CliError(
      `preparing sshd failed (exit ${prep.exit_code}): ${prep.stderr.trim() || prep.stdout.trim()}`,
    );
  const t = await sb.tunnel(22, { localPort: 0, bind: "127.0.0.1" });
  return { port: t.port, close: () => t.close() };
}

export function sshArgs(port: number, user: string, keyPath: string, extra: string[] = []): string[] {
  return [
    "-p",
    String(port),
    "-l",
    user,
    ...identityArgs(keyPath),
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    ...extra,
    "127.0.0.1",
  ];
}

/** Runs the system `ssh` on our terminal; its exit code becomes ours. */
async function runSsh(args: string[]): Promise<number> {
  const child = spawn("ssh", args, { stdio: "inherit" });
  // ssh owns the terminal now; our own Ctrl-C must not kill us before it.
  const ignore = () => {};
  process.on("SIGINT", ignore);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(new CliError(`cannot run ssh: ${err.message}`)));
      child.once("exit", (c, sig) => resolve(c ?? (sig ? 128 + 15 : 1)));
    });
  } finally {
    process.off("SIGINT", ignore);
  }
}

async function sshShell(ctx: Context, sb: Sandbox, keyPath: string, user: string): Promise<number> {
  const t = await ctx.out.step(`Preparing SSH on ${label(sb.data)}`, () =>
    prepareSsh(ctx, sb, keyPath, user),
  );
  try {
    return await runSsh(sshArgs(t.port, user, keyPath));
  } finally {
    await t.close();
  }
}

/** `shell --ssh` with a gateway configured: through the server's SSH gateway (gateway.ts). */
async function gatewayShell(ctx: Context, sb: Sandbox, keyPath: string, user: string, spec: string) {
  const gw = parseGateway(spec, ctx.commandPath);
  await ctx.out.step(`Authorising ${path.basename(keyPath)} on ${label(sb.data)}`, () =>
    ensureKeyListed(sb, keyPath, ctx.commandPath),
  );
  return runSsh(gatewaySshArgs(gw, sb.id, user, keyPath, ctx.env));
}

export const shellCommand: Command = {
  kind: "command",
  name: "shell",
  aliases: ["sh"],
  summary: "Open an interactive shell in a sandbox",
  usage: "<name|id> [--ssh | -i <key>] [--user <name>]",
  description:
    "By default a keyless PTY through the control plane — your API key is the only auth.\n" +
    "--ssh (or -i KEY) uses SSH instead: the public key is authorised in the sandbox, sshd is\n" +
    "started, and your system `ssh` connects through a tunnel; ssh's exit code becomes ours.\n" +
    "With --sandbox-gateway HOST[:PORT] (or CREATEOS_SANDBOX_GATEWAY) --ssh goes through the\n" +
    "server's SSH gateway instead: the key is added to the sandbox's ssh_pubkeys if missing and\n" +
    "ssh logs in as <sandbox id>@gateway (another --user: via the guest's sshd, gateway as jump host).",
  flags: [
    {
      name: "ssh",
      type: "boolean",
      description: "Use SSH (default key: ~/.ssh/id_ed25519, id_ecdsa or id_rsa)",
    },
    {
      name: "identity",
      short: "i",
      type: "string",
      value: "<key>",
      description: "SSH private key (implies --ssh)",
    },
    {
      name: "user",
      short: "u",
      type: "string",
      value: "<name>",
      description: "SSH login user (default root)",
    },
  ],
  args: { max: 1 },
  completes: "sandbox",
  examples: [
    "createos sandbox shell my-box",
    "createos sandbox shell my-box --ssh",
    "createos sandbox shell my-box -i ~/.ssh/id_ed25519",
    "createos --sandbox-gateway 127.0.0.1:2222 sandbox shell my-box --ssh",
  ],
  async run(ctx, { flags, positionals }) {
    const identity = str(flags, "identity");
    const useSsh = bool(flags, "ssh") || identity !== undefined;
    let keyPath: string | undefined;
    if (useSsh) {
      keyPath = identity
        ? identity.startsWith("~/")
          ? path.join(homeDir(ctx.env), identity.slice(2))
          : identity
        : defaultKey(ctx.env);
      if (!keyPath)
        throw new UsageError("no SSH key found in ~/.ssh; pass one with -i <private key>", ctx.commandPath);
      if (keyPath.endsWith(".pub")) keyPath = keyPath.slice(0, -4);
      if (!fs.existsSync(keyPath)) throw new UsageError(`no such key: ${keyPath}`, ctx.commandPath);
    }
    const sb = await boxArg(ctx, positionals[0], ["running"], "open a shell in");
    requireRunning(sb);
    const user = str(flags, "user") ?? "root";
    if (keyPath && ctx.globals.gateway) return gatewayShell(ctx, sb, keyPath, user, ctx.globals.gateway);
    if (keyPath) return sshShell(ctx, sb, keyPath, user);
    return keylessShell(ctx, sb);
  },
};
