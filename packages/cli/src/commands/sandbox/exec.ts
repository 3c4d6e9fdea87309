import * as fs from "node:fs";
import { bool, list, str } from "../../framework/args.js";
import type { Command, Context } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { boxArg, parseEnvPairs } from "./common.js";

/**
 * Piped stdin is forwarded; a terminal or /dev/null is not, so `exec` in CI never waits for input
 * nobody will send.
 */
async function readLocalStdin(ctx: Context): Promise<string | undefined> {
  const { stdin } = ctx.streams;
  if (stdin.isTTY) return undefined;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(0);
  } catch {
    return undefined;
  }
  if (!st.isFIFO() && !st.isFile() && !st.isSocket()) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(c as Buffer);
  const data = Buffer.concat(chunks);
  return data.length ? data.toString("utf8") : undefined;
}

function exitStatus(code: number): number {
  return code >= 0 && code <= 255 ? code : 1;
}

export const execCommand: Command = {
  kind: "command",
  name: "exec",
  summary: "Run a command in a sandbox (its exit code becomes ours)",
  usage: "<name|id> [--stream] [--env KEY=VALUE] [--stdin <file>] -- <cmd> [args...]",
  description:
    "Anything after -- is the command; it runs without a shell (wrap in `sh -c '…'` for pipes).\n" +
    "Piped local stdin (or --stdin FILE) is passed to the command. With --output json one object\n" +
    "{sandbox_id, exit_code, stdout, stderr} is printed instead of the raw output.",
  flags: [
    { name: "stream", short: "s", type: "boolean", description: "Stream stdout/stderr live" },
    {
      name: "env",
      short: "e",
      type: "string",
      multiple: true,
      value: "KEY=VALUE",
      description: "Override an env var for this exec",
    },
    { name: "stdin", type: "string", value: "<file>", description: "Send this file as the command's stdin" },
  ],
  completes: "sandbox",
  examples: [
    "createos sandbox exec my-box -- uname -a",
    "createos sandbox exec my-box -- python3 -c 'print(\"hi\")'",
    "createos sandbox exec my-box --stream -- pip install requests",
    "echo hello | createos sandbox exec my-box -- cat",
    "createos sandbox exec my-box -- sh -c 'cd /app && npm test'",
  ],
  async run(ctx, { flags, positionals, rest }) {
    const cp = ctx.commandPath;
    const command = rest ?? positionals.slice(1);
    if (positionals.length === 0 && rest !== undefined && !ctx.interactive)
      throw new UsageError("missing sandbox name or id", cp);
    if (rest !== undefined && positionals.length > 1) {
      throw new UsageError(`unexpected argument "${positionals[1]}" before --`, cp);
    }
    if (command.length === 0)
      throw new UsageError("missing command: put it after --, e.g. `exec my-box -- ls -la`", cp);
    const env = parseEnvPairs(list(flags, "env"), cp);
    const stdinFile = str(flags, "stdin");
    let stdin: string | undefined;
    if (stdinFile !== undefined) {
      try {
        stdin = fs.readFileSync(stdinFile === "-" ? 0 : stdinFile, "utf8");
      } catch (err) {
        throw new UsageError(
          `cannot read --stdin ${stdinFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
          cp,
        );
      }
    } else {
      stdin = await readLocalStdin(ctx);
    }
    const sb = await boxArg(ctx, positionals[0], ["running"], "run a command in");
    const [cmd, ...cmdArgs] = command as [string, ...string[]];
    // Commands may run for a long time: no client-side timeout, Ctrl-C cancels.
    const options = { timeoutMs: 0, ...(stdin !== undefined ? { stdin } : {}), ...(env ? { env } : {}) };
    const abort = new AbortController();
    const onSigint = () => abort.abort();
    process.once("SIGINT", onSigint);
    try {
      if (bool(flags, "stream") && !ctx.out.explicitJson) {
        let exit: number | undefined;
        for await (const ev of sb.streamCommand(cmd, cmdArgs, { ...options, signal: abort.signal })) {
          if (ev.type === "stdout") ctx.streams.stdout.write(ev.data);
          else if (ev.type === "stderr") ctx.streams.stderr.write(ev.data);
          else if (ev.type === "error")
            ctx.streams.stderr.write(`${ctx.out.errStyle.red("error:")} ${ev.message}\n`);
          else if (ev.type === "exit") exit = ev.exitCode;
        }
        if (abort.signal.aborted) return 130;
        if (exit === undefined) throw new CliError("the command's output ended without an exit code");
        return exitStatus(exit);
      }
      const { result: r } = await sb.runCommand(cmd, cmdArgs, {
        ...options,
        retry: false,
        signal: abort.signal,
      });
      if (ctx.out.explicitJson) {
        ctx.out.printJson({
          sandbox_id: sb.id,
          exit_code: r.exit_code,
          stdout: r.stdout,
          stderr: r.stderr,
          ...(r.error ? { error: r.error } : {}),
        });
      } else {
        ctx.streams.stdout.write(r.stdout);
        ctx.streams.stderr.write(r.stderr);
        if (r.error) ctx.streams.stderr.write(`${ctx.out.errStyle.red("error:")} ${r.error}\n`);
      }
      if (r.error && r.exit_code === 0) return 1;
      return exitStatus(r.exit_code);
    } catch (err) {
      if (abort.signal.aborted) return 130;
      throw err;
    } finally {
      process.off("SIGINT", onSigint);
    }
  },
};
