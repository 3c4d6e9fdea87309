import { UsageError } from "./errors.js";

export interface FlagSpec {
  name: string;
  short?: string;
  /** "boolean" flags take no value; "string" flags take one (`--x v` or `--x=v`). */
  type: "boolean" | "string";
  multiple?: boolean;
  /** Shown in help in place of the value, e.g. "<id>". */
  value?: string;
  description: string;
  /** Allowed values, checked at parse time and offered by completion. */
  choices?: readonly string[];
  /** Hidden aliases, e.g. `--yes` for `--force`. */
  aliases?: string[];
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

export interface ParsedArgs {
  flags: FlagValues;
  positionals: string[];
  /** Everything after a literal `--`, verbatim. `undefined` when there was no `--`. */
  rest: string[] | undefined;
}

export interface Globals {
  output: "json" | "table" | undefined;
  debug: boolean;
  apiUrl: string | undefined;
  gateway: string | undefined;
  apiKey: string | undefined;
  help: boolean;
  noColor: boolean;
}

export const GLOBAL_FLAGS: FlagSpec[] = [
  {
    name: "output",
    short: "o",
    type: "string",
    value: "json|table",
    choices: ["json", "table"],
    description: "Output format (default: table on a terminal, json otherwise)",
  },
  { name: "debug", short: "d", type: "boolean", description: "Show HTTP requests and stack traces" },
  { name: "sandbox-api-url", type: "string", value: "<url>", description: "Override the API base URL" },
  {
    name: "sandbox-gateway",
    type: "string",
    value: "<host:port>",
    description: "SSH gateway for sandbox shell --ssh",
  },
  { name: "api-key", type: "string", value: "<key>", description: "API key (overrides the stored one)" },
  { name: "no-color", type: "boolean", description: "Disable colours (also NO_COLOR=1)" },
  { name: "help", short: "h", type: "boolean", description: "Show help" },
];

function findFlag(
  specs: FlagSpec[],
  token: string,
): { spec: FlagSpec; inline: string | undefined } | undefined {
  if (token.startsWith("--")) {
    const eq = token.indexOf("=");
    const name = eq === -1 ? token.slice(2) : token.slice(2, eq);
    const inline = eq === -1 ? undefined : token.slice(eq + 1);
    const spec = specs.find((s) => s.name === name || s.aliases?.includes(name));
    return spec ? { spec, inline } : undefined;
  }
  if (token.startsWith("-") && token.length >= 2) {
    const short = token.slice(1, 2);
    const spec = specs.find((s) => s.short === short);
    if (!spec) return undefined;
    // `-ojson` and `-o=json` are accepted like most CLIs do.
    const tail = token.slice(2);
    if (tail === "") return { spec, inline: undefined };
    if (spec.type === "boolean") return undefined;
    return { spec, inline: tail.startsWith("=") ? tail.slice(1) : tail };
  }
  return undefined;
}

/**
 * Removes global flags from anywhere before `--` so `createos sandbox list -o json` and
 * `createos -o json sandbox list` mean the same.
 */
export function hoistGlobals(argv: string[], env: NodeJS.ProcessEnv): { globals: Globals; rest: string[] } {
  const values: FlagValues = {};
  const rest: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const token = argv[i] as string;
    if (token === "--") break;
    const hit = token.startsWith("-") && token !== "-" ? findFlag(GLOBAL_FLAGS, token) : undefined;
    if (!hit) {
      rest.push(token);
      continue;
    }
    const { spec, inline } = hit;
    if (spec.type === "boolean") {
      if (inline !== undefined) throw new UsageError(`flag --${spec.name} takes no value`);
      values[spec.name] = true;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next === "--") throw new UsageError(`flag --${spec.name} needs a value`);
      value = next;
      i++;
    }
    values[spec.name] = value;
  }
  for (; i < argv.length; i++) rest.push(argv[i] as string);

  const outputRaw = (values.output as string | undefined) ?? env.CREATEOS_OUTPUT;
  let output: Globals["output"];
  if (outputRaw !== undefined && outputRaw !== "") {
    if (outputRaw !== "json" && outputRaw !== "table") {
      throw new UsageError(`invalid output format "${outputRaw}" (want json or table)`);
    }
    output = outputRaw;
  }
  const envTrue = (v: string | undefined) => v !== undefined && v !== "" && v !== "0" && v !== "false";
  return {
    globals: {
      output,
      debug: values.debug === true || envTrue(env.CREATEOS_DEBUG),
      apiUrl: values["sandbox-api-url"] as string | undefined,
      gateway: (values["sandbox-gateway"] as string | undefined) ?? env.CREATEOS_SANDBOX_GATEWAY,
      apiKey: values["api-key"] as string | undefined,
      help: values.help === true,
      noColor: values["no-color"] === true || (env.NO_COLOR !== undefined && env.NO_COLOR !== ""),
    },
    rest,
  };
}

/** Parses a command's own flags; unknown flags are usage errors. */
export function parseCommandArgs(argv: string[], specs: FlagSpec[], commandPath: string): ParsedArgs {
  const flags: FlagValues = {};
  const positionals: string[] = [];
  let rest: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] as string;
    if (token === "--") {
      rest = argv.slice(i + 1);
      break;
    }
    if (!token.startsWith("-") || token === "-") {
      positionals.push(token);
      continue;
    }
    const hit = findFlag(specs, token);
    if (!hit) throw new UsageError(`unknown flag ${token.split("=")[0]}`, commandPath);
    const { spec, inline } = hit;
    let value: string | boolean;
    if (spec.type === "boolean") {
      if (inline !== undefined) {
        if (!["true", "false", "1", "0"].includes(inline)) {
          throw new UsageError(`flag --${spec.name} takes no value`, commandPath);
        }
        value = inline === "true" || inline === "1";
      } else {
        value = true;
      }
    } else if (inline !== undefined) {
      value = inline;
    } else {
      const next = argv[i + 1];
      if (next === undefined || next === "--")
        throw new UsageError(`flag --${spec.name} needs a value`, commandPath);
      value = next;
      i++;
    }
    if (spec.choices && typeof value === "string" && !spec.choices.includes(value)) {
      throw new UsageError(
        `invalid value "${value}" for --${spec.name} (want ${spec.choices.join(", ")})`,
        commandPath,
      );
    }
    if (spec.multiple) {
      const list = (flags[spec.name] as string[] | undefined) ?? [];
      list.push(String(value));
      flags[spec.name] = list;
    } else {
      if (flags[spec.name] !== undefined && spec.type === "string") {
        throw new UsageError(`flag --${spec.name} given more than once`, commandPath);
      }
      flags[spec.name] = value;
    }
  }
  return { flags, positionals, rest };
}

/** Typed accessors so command code stays free of casts. */
export function str(flags: FlagValues, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}
export function bool(flags: FlagValues, name: string): boolean {
  return flags[name] === true;
}
export function list(flags: FlagValues, name: string): string[] {
  const v = flags[name];
  return Array.isArray(v) ? v : [];
}
export function int(
  flags: FlagValues,
  name: string,
  commandPath: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a whole number, got "${v}"`, commandPath);
  const n = Number(v);
  if (n < min || n > max)
    throw new UsageError(`--${name} must be between ${min} and ${max}, got ${n}`, commandPath);
  return n;
}
