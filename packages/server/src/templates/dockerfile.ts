/**
 * A Dockerfile parser of BuildKit's grammar, as far as a template needs it: parser directives (`# escape=`,
 * `# syntax=`) before anything else, comments, line continuations with the escape character, exec (JSON)
 * and shell forms, and heredocs (`RUN <<EOF`). Then the template rules of protocol.md §2.9: exactly one
 * FROM, on the allowlist, without ARG substitution, no COPY/ADD (there is no build context), ≤ 64 KiB.
 */

export const DOCKERFILE_MAX = 64 * 1024;
/** What a template may be built on: the image names hostd builds, compared as exact strings. */
export const TEMPLATE_BASES = ["nodeops/sandbox:debian"];

export interface Instruction {
  /** Upper-cased keyword. */
  cmd: string;
  /** The arguments as written (continuations joined), heredoc bodies excluded. */
  args: string;
  /** Set when the arguments were a JSON array (exec form). */
  json?: string[];
  /** Heredoc bodies in order, each with the name it was opened with. */
  heredocs: { name: string; body: string; strip: boolean }[];
  /** 1-based line where the instruction starts. */
  line: number;
}

export class DockerfileError extends Error {}

const KNOWN = new Set([
  "FROM",
  "RUN",
  "ENV",
  "WORKDIR",
  "USER",
  "SHELL",
  "ARG",
  "LABEL",
  "EXPOSE",
  "CMD",
  "ENTRYPOINT",
  "COPY",
  "ADD",
  "VOLUME",
  "STOPSIGNAL",
  "HEALTHCHECK",
  "ONBUILD",
  "MAINTAINER",
]);
const REFUSED: Record<string, string> = {
  COPY: "COPY is not allowed (there is no build context): create files with RUN",
  ADD: "ADD is not allowed (there is no build context): fetch files with RUN",
  ONBUILD: "ONBUILD is not supported in templates",
  VOLUME: "VOLUME is not supported in templates",
  HEALTHCHECK: "HEALTHCHECK is not supported in templates",
};

/** Leading `# key=value` lines, until the first line that is not one. */
function directives(lines: string[]): { esc: string; start: number } {
  let esc = "\\";
  const seen = new Set<string>();
  let i = 0;
  for (; i < lines.length; i++) {
    const m = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(\S+)\s*$/.exec(lines[i]!);
    if (!m) break;
    const key = m[1]!.toLowerCase();
    if (seen.has(key)) throw new DockerfileError(`line ${i + 1}: parser directive ${key} given twice`);
    seen.add(key);
    if (key === "escape") {
      if (m[2] !== "\\" && m[2] !== "`") throw new DockerfileError(`line ${i + 1}: escape must be \\ or \``);
      esc = m[2]!;
    }
  }
  return { esc, start: i };
}

const HEREDOC_RE = /<<(-?)(["']?)([A-Za-z_][A-Za-z0-9_]*)\2/g;

/** Parses the text into instructions; throws DockerfileError with the line on a syntax error. */
export function parseDockerfile(text: string): Instruction[] {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const { esc, start } = directives(lines);
  const out: Instruction[] = [];
  let i = start;
  const contRe = new RegExp(`${esc === "\\" ? "\\\\" : "`"}\\s*$`);
  while (i < lines.length) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) {
      i++;
      continue;
    }
    const first = i + 1;
    let joined = "";
    let cur = raw;
    for (;;) {
      if (contRe.test(cur)) {
        joined += cur.replace(contRe, "");
        i++;
        // comment and empty lines inside a continuation are dropped, as BuildKit does
        while (i < lines.length && /^\s*(#.*)?$/.test(lines[i]!)) i++;
        if (i >= lines.length) break;
        cur = lines[i]!;
        continue;
      }
      joined += cur;
      i++;
      break;
    }
    const m = /^\s*([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(joined);
    if (!m)
      throw new DockerfileError(`line ${first}: expected an instruction, got ${JSON.stringify(trimmed)}`);
    const cmd = m[1]!.toUpperCase();
    if (!KNOWN.has(cmd)) throw new DockerfileError(`line ${first}: unknown instruction ${m[1]}`);
    const args = (m[2] ?? "").trim();
    const ins: Instruction = { cmd, args, heredocs: [], line: first };
    if (args.startsWith("[")) {
      try {
        const v = JSON.parse(args) as unknown;
        if (Array.isArray(v) && v.every((x) => typeof x === "string")) ins.json = v;
      } catch {
        // not JSON: shell form, as Docker treats it
      }
    }
    if ((cmd === "RUN" || cmd === "COPY" || cmd === "ADD") && !ins.json) {
      for (const h of args.matchAll(HEREDOC_RE)) {
        const name = h[3]!;
        const strip = h[1] === "-";
        const body: string[] = [];
        for (;;) {
          if (i >= lines.length) throw new DockerfileError(`line ${first}: heredoc ${name} is not closed`);
          const l = lines[i++]!;
          if ((strip ? l.replace(/^\t+/, "") : l) === name) break;
          body.push(strip ? l.replace(/^\t+/, "") : l);
        }
        ins.heredocs.push({ name, body: body.length ? `${body.join("\n")}\n` : "", strip });
      }
    }
    out.push(ins);
  }
  return out;
}

/** A step the builder runs, with the state the instructions before it set. */
export interface BuildStep {
  /** The instruction as written, for the log. */
  text: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  user: string;
}

export interface BuildPlan {
  base: string;
  steps: BuildStep[];
  /** ENV, WORKDIR and USER as the last instruction left them: applied to sandboxes from the template. */
  env: Record<string, string>;
  cwd: string;
  user: string;
  cmd?: string[];
  entrypoint?: string[];
}

/** `KEY=value KEY2="v 2"` or the legacy `KEY value`. */
function keyValues(args: string, line: number, what: string): [string, string][] {
  const pairs: [string, string][] = [];
  const re = /([^\s=]+)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/gy;
  let rest = args.trim();
  if (!/^[^\s=]+=/.test(rest)) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(rest);
    if (!m) throw new DockerfileError(`line ${line}: ${what} needs KEY=value`);
    return [[m[1]!, m[2]!.trim()]];
  }
  while (rest) {
    re.lastIndex = 0;
    const m = re.exec(rest);
    if (!m) throw new DockerfileError(`line ${line}: ${what}: cannot parse ${JSON.stringify(rest)}`);
    let v = m[2]!;
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, "$1");
    else if (v.startsWith("'")) v = v.slice(1, -1);
    pairs.push([m[1]!, v]);
    rest = rest.slice(m[0].length).trimStart();
  }
  return pairs;
}

/** `$VAR`, `${VAR}`, `${VAR:-default}` from `vars` (ENV, WORKDIR, USER arguments). */
function expand(s: string, vars: Record<string, string>): string {
  return s.replace(
    /\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (_, a, d, b) => {
      // Own keys only: a name like `constructor` must not find Object.prototype's.
      const name = (a ?? b) as string;
      const v = Object.hasOwn(vars, name) ? vars[name] : undefined;
      return v !== undefined && v !== "" ? v : ((d as string | undefined) ?? "");
    },
  );
}

function jsonArg(ins: Instruction): string[] {
  return ins.json ?? ["/bin/sh", "-c", ins.args];
}

/** Validates `text` against the template rules and turns it into the builder's steps. */
export function planDockerfile(text: string): BuildPlan {
  if (Buffer.byteLength(text) > DOCKERFILE_MAX)
    throw new DockerfileError(`dockerfile exceeds ${DOCKERFILE_MAX} bytes`);
  const all = parseDockerfile(text);
  const froms = all.filter((x) => x.cmd === "FROM");
  if (froms.length !== 1)
    throw new DockerfileError(`dockerfile must have exactly one FROM (found ${froms.length})`);
  const fromIdx = all.findIndex((x) => x.cmd === "FROM");
  if (all.slice(0, fromIdx).some((x) => x.cmd !== "ARG"))
    throw new DockerfileError("FROM must be the first instruction (only ARG may come before it)");
  const from = froms[0]!;
  const words = from.args.split(/\s+/).filter(Boolean);
  if (words.some((w) => w.includes("$")))
    throw new DockerfileError(`line ${from.line}: FROM must not use ARG substitution`);
  if (words.length === 3 && words[1]!.toUpperCase() === "AS") words.length = 1;
  if (words.length !== 1 || words[0]!.startsWith("--"))
    throw new DockerfileError(`line ${from.line}: FROM takes one image name`);
  const base = words[0]!;
  if (!TEMPLATE_BASES.includes(base))
    throw new DockerfileError(
      `FROM base ${base} is not allowed; allowed bases: ${TEMPLATE_BASES.join(", ")}`,
    );

  for (const ins of all) {
    const why = REFUSED[ins.cmd];
    if (why) throw new DockerfileError(`line ${ins.line}: ${why}`);
  }
  const plan: BuildPlan = { base, steps: [], env: {}, cwd: "/", user: "root" };
  let shell = ["/bin/sh", "-c"];
  const args: Record<string, string> = {};
  for (const ins of all.slice(fromIdx + 1)) {
    const vars = { ...args, ...plan.env };
    switch (ins.cmd) {
      case "ENV":
        for (const [k, v] of keyValues(ins.args, ins.line, "ENV")) plan.env[k] = expand(v, vars);
        break;
      case "ARG": {
        const [name, def] = ins.args.split("=", 2) as [string, string | undefined];
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name.trim()))
          throw new DockerfileError(`line ${ins.line}: bad ARG name`);
        args[name.trim()] = def ?? "";
        break;
      }
      case "WORKDIR": {
        const d = expand(ins.args, vars);
        plan.cwd = d.startsWith("/") ? d : `${plan.cwd.replace(/\/$/, "")}/${d}`;
        break;
      }
      case "USER":
        plan.user = expand(ins.args, vars).trim();
        if (!plan.user) throw new DockerfileError(`line ${ins.line}: USER needs a name`);
        break;
      case "SHELL":
        if (!ins.json?.length) throw new DockerfileError(`line ${ins.line}: SHELL must be a JSON array`);
        shell = ins.json;
        break;
      case "CMD":
        plan.cmd = jsonArg(ins);
        break;
      case "ENTRYPOINT":
        plan.entrypoint = jsonArg(ins);
        break;
      case "RUN": {
        if (ins.args.startsWith("--"))
          throw new DockerfileError(
            `line ${ins.line}: RUN flags (${ins.args.split(/\s/)[0]}) are not supported`,
          );
        const argv = ins.json ?? [...shell, runScript(ins)];
        // ARGs reach RUN as env, as Docker's build args do; ENV wins over ARG.
        plan.steps.push({
          text: `RUN ${ins.args}`,
          argv,
          env: { ...args, ...plan.env },
          cwd: plan.cwd,
          user: plan.user,
        });
        break;
      }
      default:
        break; // LABEL, EXPOSE, STOPSIGNAL, MAINTAINER: metadata without effect on the rootfs
    }
  }
  return plan;
}

/** A shell-form RUN with heredocs: the bodies are fed as here-documents of the shell, as BuildKit does. */
function runScript(ins: Instruction): string {
  if (!ins.heredocs.length) return ins.args;
  const only = ins.heredocs[0]!;
  // `RUN <<EOF` alone: the body is the script
  if (ins.heredocs.length === 1 && new RegExp(`^<<-?["']?${only.name}["']?$`).test(ins.args))
    return only.body;
  let s = ins.args;
  for (const h of ins.heredocs) s += `\n${h.body}${h.name}`;
  return `${s}\n`;
}
