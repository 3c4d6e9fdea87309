import { completionCommand } from "./commands/completion.js";
import { loginCommand, logoutCommand } from "./commands/login.js";
import { sandboxGroup } from "./commands/sandbox/index.js";
import { versionCommand } from "./commands/version.js";
import { type Globals, hoistGlobals } from "./framework/args.js";
import {
  type Context,
  type Group,
  helpText,
  makePrompter,
  matches,
  parseFor,
  resolveCommand,
} from "./framework/command.js";
import { CliError, EXIT_OK, ExitCode, UsageError } from "./framework/errors.js";
import { Output, type Streams } from "./framework/output.js";
import { type Api, connect, describeError } from "./lib/api.js";
import { resolveCredentials } from "./lib/config.js";

export const root: Group = {
  kind: "group",
  name: "createos",
  summary: "createos — create, run and manage CreateOS sandboxes from the terminal.",
  children: [sandboxGroup, loginCommand, logoutCommand, completionCommand(() => root), versionCommand],
  examples: [
    "createos login",
    "createos sandbox shapes",
    "createos sandbox create --shape s-1vcpu-256mb --name my-box",
    "createos sandbox exec my-box -- uname -a",
    "createos sandbox shell my-box",
    "createos sandbox rm my-box --force",
  ],
};

function printError(
  out: Output | undefined,
  streams: Streams,
  err: unknown,
  globals: Globals | undefined,
  apiUrl?: string,
): number {
  const d = describeError(err, apiUrl);
  const errStyle = out?.errStyle;
  if (out?.json) {
    out.printJson({ error: { code: d.code, message: d.message } });
  } else {
    streams.stderr.write(`${errStyle ? errStyle.red("error:") : "error:"} ${d.message}\n`);
  }
  if (err instanceof UsageError && err.helpFor && !out?.json) {
    streams.stderr.write(`Run '${err.helpFor} --help' for usage.\n`);
  }
  if (globals?.debug && err instanceof Error && err.stack && !(err instanceof CliError)) {
    streams.stderr.write(err.stack + "\n");
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.stack) streams.stderr.write(`caused by: ${cause.stack}\n`);
  }
  return d.exitCode;
}

/** Runs one invocation and returns the process exit code; never throws. */
export async function run(argv: string[], env: NodeJS.ProcessEnv, streams: Streams): Promise<number> {
  let globals: Globals | undefined;
  let out: Output | undefined;
  try {
    const hoisted = hoistGlobals(argv, env);
    globals = hoisted.globals;
    out = new Output(streams, globals);
    let rest = hoisted.rest;
    let help = globals.help;
    // `createos help sandbox create` == `createos sandbox create --help`
    if (rest[0] === "help") {
      help = true;
      rest = rest.slice(1);
    }
    const { node, path, rest: tail } = resolveCommand(root, rest);
    if (node.kind === "group") {
      const next = tail[0];
      if (next !== undefined && !help) {
        const known = node.children.some((c) => matches(c, next));
        if (!known) throw new UsageError(`unknown command "${next}" for "${path.join(" ")}"`, path.join(" "));
      }
      streams.stdout.write(helpText(node, path));
      return EXIT_OK;
    }
    if (help) {
      streams.stdout.write(helpText(node, path));
      return EXIT_OK;
    }
    const args = parseFor(node, path, tail);
    let api: Promise<Api> | undefined;
    const g = globals;
    const o = out;
    const ctx: Context = {
      globals: g,
      env,
      streams,
      out: o,
      commandPath: path.join(" "),
      api: () => {
        api ??= connect(g, env, (line) => streams.stderr.write(`${o.errStyle.dim(line)}\n`));
        return api;
      },
      interactive: streams.stdin.isTTY === true && streams.stdout.isTTY === true,
      prompt: makePrompter(streams, o),
    };
    const code = await node.run(ctx, args);
    return code ?? EXIT_OK;
  } catch (err) {
    if (err instanceof ExitCode) return err.exitCode;
    let apiUrl: string | undefined;
    try {
      apiUrl = globals ? resolveCredentials(globals, env).apiUrl : undefined;
    } catch {
      apiUrl = undefined;
    }
    return printError(out, streams, err, globals, apiUrl);
  }
}
