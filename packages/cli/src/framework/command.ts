import type { Api } from "../lib/api.js";
import { Prompter } from "../ui/prompt.js";
import { type FlagSpec, GLOBAL_FLAGS, type Globals, type ParsedArgs, parseCommandArgs } from "./args.js";
import { UsageError } from "./errors.js";
import type { Output, Streams } from "./output.js";

/** What a positional argument completes to in the shell completion scripts. */
export type Completes = "sandbox" | "file" | "none";

export interface Command {
  kind: "command";
  name: string;
  aliases?: string[];
  summary: string;
  /** Argument synopsis after the command path, e.g. `<box> [--stream] -- <cmd> [args...]`. */
  usage: string;
  description?: string;
  flags?: FlagSpec[];
  examples?: string[];
  /** Positional count bounds, checked before `run`. */
  args?: { min?: number; max?: number };
  completes?: Completes;
  run(ctx: Context, args: ParsedArgs): Promise<number | undefined>;
}

export interface Group {
  kind: "group";
  name: string;
  aliases?: string[];
  summary: string;
  description?: string;
  examples?: string[];
  children: Array<Command | Group>;
}

export type Node = Command | Group;

export interface Context {
  globals: Globals;
  env: NodeJS.ProcessEnv;
  streams: Streams;
  out: Output;
  /** e.g. "createos sandbox create" */
  commandPath: string;
  /** Connects through the SDK on first use (needs credentials). */
  api(): Promise<Api>;
  /** True when both stdin and stdout are terminals: prompts and pickers are allowed. */
  interactive: boolean;
  prompt: Prompter;
}

export function matches(node: Node, token: string): boolean {
  return node.name === token || (node.aliases?.includes(token) ?? false);
}

export interface Resolved {
  node: Node;
  path: string[];
  rest: string[];
}

/** Walks `argv` down the command tree as far as names match. */
export function resolveCommand(root: Group, argv: string[]): Resolved {
  let node: Node = root;
  const path = [root.name];
  let i = 0;
  while (node.kind === "group" && i < argv.length) {
    const token = argv[i] as string;
    const child: Node | undefined = node.children.find((c) => matches(c, token));
    if (!child) break;
    node = child;
    path.push(child.name);
    i++;
  }
  return { node, path, rest: argv.slice(i) };
}

/** Parses the command's flags and checks positional counts: every violation is exit 2. */
export function parseFor(cmd: Command, path: string[], rest: string[]): ParsedArgs {
  const commandPath = path.join(" ");
  const parsed = parseCommandArgs(rest, cmd.flags ?? [], commandPath);
  const min = cmd.args?.min ?? 0;
  const max = cmd.args?.max ?? Number.POSITIVE_INFINITY;
  if (parsed.positionals.length > max) {
    throw new UsageError(`unexpected argument "${parsed.positionals[max]}"`, commandPath);
  }
  if (parsed.positionals.length < min) {
    throw new UsageError(`missing argument: ${cmd.usage}`, commandPath);
  }
  return parsed;
}

export function makePrompter(streams: Streams, out: Output): Prompter {
  return new Prompter(streams.stdin, streams.stderr, out.errStyle);
}

function flagLine(f: FlagSpec): [string, string] {
  const names = f.short ? `-${f.short}, --${f.name}` : `    --${f.name}`;
  const value = f.type === "string" ? ` ${f.value ?? "<value>"}` : "";
  const rep = f.multiple ? " (repeatable)" : "";
  return [`${names}${value}`, `${f.description}${rep}`];
}

function columns(rows: Array<[string, string]>, indent = "  "): string {
  const w = Math.max(0, ...rows.map(([a]) => a.length));
  return rows.map(([a, b]) => `${indent}${a.padEnd(w)}   ${b}`.trimEnd()).join("\n");
}

/** Every runnable command under a group, with its path relative to the group. */
export function flatten(group: Group, prefix: string[] = []): Array<{ path: string[]; cmd: Command }> {
  const out: Array<{ path: string[]; cmd: Command }> = [];
  for (const c of group.children) {
    if (c.kind === "command") out.push({ path: [...prefix, c.name], cmd: c });
    else out.push(...flatten(c, [...prefix, c.name]));
  }
  return out;
}

export function helpText(node: Node, path: string[]): string {
  const full = path.join(" ");
  const parts: string[] = [];
  if (node.kind === "command") {
    parts.push(node.summary, "");
    if (node.description) parts.push(node.description, "");
    parts.push("USAGE", `  ${full} ${node.usage}`.trimEnd(), "");
    if (node.aliases?.length) parts.push("ALIASES", `  ${node.aliases.join(", ")}`, "");
    if (node.flags?.length) parts.push("FLAGS", columns(node.flags.map(flagLine)), "");
  } else {
    parts.push(node.summary, "");
    if (node.description) parts.push(node.description, "");
    parts.push("USAGE", `  ${full} <command> [flags]`, "");
    if (node.aliases?.length) parts.push("ALIASES", `  ${node.aliases.join(", ")}`, "");
    // The top level stays short; a command group lists every command beneath it.
    const rows: Array<[string, string]> =
      path.length === 1
        ? node.children.map((c) => [
            c.name,
            c.kind === "group" ? `${c.summary} (${[c.name, ...(c.aliases ?? [])].join(", ")})` : c.summary,
          ])
        : flatten(node).map(({ path: p, cmd }) => [p.join(" "), cmd.summary]);
    parts.push("COMMANDS", columns(rows), "");
  }
  parts.push("GLOBAL FLAGS", columns(GLOBAL_FLAGS.map(flagLine)), "");
  const examples = node.examples ?? [];
  if (examples.length) parts.push("EXAMPLES", examples.map((e) => `  ${e}`).join("\n"), "");
  if (node.kind === "group") parts.push(`Run '${full} <command> --help' for more about a command.`, "");
  return parts.join("\n");
}
