import * as fs from "node:fs";
import * as path from "node:path";
import type { Context } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { homeDir } from "../../lib/config.js";
import type { Sandbox, SandboxStatus, SandboxView } from "../../lib/sdk.js";
import { relativeTime } from "../../ui/table.js";

export const ACTIVE_STATUSES: SandboxStatus[] = [
  "running",
  "paused",
  "pausing",
  "resuming",
  "forking",
  "creating",
];

/**
 * The sandbox named by the first positional, or — on a terminal — one picked from a list of
 * sandboxes in `statuses` (protocol.md §5.6).
 */
export async function boxArg(
  ctx: Context,
  ref: string | undefined,
  statuses: SandboxStatus[],
  verb: string,
): Promise<Sandbox> {
  const api = await ctx.api();
  if (ref !== undefined) return api.sandbox(ref);
  if (!ctx.interactive) throw new UsageError("missing sandbox name or id", ctx.commandPath);
  const all = await api.sandboxes(200);
  const candidates = all.filter((s) => statuses.includes(s.data.status));
  if (candidates.length === 0) {
    throw new CliError(`no ${statuses.join("/")} sandboxes to ${verb}`, "not_found");
  }
  return ctx.prompt.select(
    `Sandbox to ${verb}`,
    candidates.map((s) => ({
      label: s.data.name ?? s.id,
      value: s,
      hint: `${s.id}  ${s.data.status}  ${relativeTime(s.data.created_at)}`,
    })),
  );
}

export function label(v: Pick<SandboxView, "id" | "name">): string {
  return v.name ? `${v.name} (${v.id})` : v.id;
}

/** Reads an OpenSSH public key; a private key path is mapped to its `.pub` sibling. */
export function readPublicKey(file: string, env: NodeJS.ProcessEnv, commandPath: string): string {
  const expanded = file.startsWith("~/") ? path.join(homeDir(env), file.slice(2)) : file;
  let p = expanded;
  if (!p.endsWith(".pub") && fs.existsSync(`${p}.pub`)) p = `${p}.pub`;
  let text: string;
  try {
    text = fs.readFileSync(p, "utf8").trim();
  } catch (err) {
    throw new UsageError(
      `cannot read SSH key ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      commandPath,
    );
  }
  if (text.includes("PRIVATE KEY")) {
    throw new UsageError(`${file} is a private key; pass the .pub file`, commandPath);
  }
  if (!/^(ssh-|ecdsa-|sk-)/.test(text))
    throw new UsageError(`${file} does not look like an OpenSSH public key`, commandPath);
  return text.split("\n")[0] as string;
}

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseEnvPairs(pairs: string[], commandPath: string): Record<string, string> | undefined {
  if (pairs.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    if (eq <= 0) throw new UsageError(`--env wants KEY=VALUE, got "${p}"`, commandPath);
    const key = p.slice(0, eq);
    if (!ENV_KEY.test(key)) throw new UsageError(`invalid environment variable name "${key}"`, commandPath);
    out[key] = p.slice(eq + 1);
  }
  return out;
}

export function ingressUrl(v: SandboxView, port = 80): string | undefined {
  return v.ingress_url_template?.replace("<port>", String(port));
}

/** Polls until the sandbox reaches `target` (2 s at most between polls, 5 min overall). */
export async function waitForStatus(
  sb: Sandbox,
  target: "running" | "paused",
  timeoutMs = 300_000,
): Promise<Sandbox> {
  return target === "running" ? sb.waitUntilRunning({ timeoutMs }) : sb.waitUntilPaused({ timeoutMs });
}

export function onOff(value: string, flag: string, commandPath: string): boolean {
  const v = value.toLowerCase();
  if (["on", "true", "yes", "enable", "enabled", "1"].includes(v)) return true;
  if (["off", "false", "no", "disable", "disabled", "0"].includes(v)) return false;
  throw new UsageError(`--${flag} wants on or off, got "${value}"`, commandPath);
}

/** Runtime commands need a live VM; say how to get one instead of letting the server refuse. */
export function requireRunning(sb: Sandbox): void {
  if (sb.data.status !== "running") {
    throw new CliError(
      `${label(sb.data)} is ${sb.data.status}; resume it first: createos sandbox resume ${sb.data.name ?? sb.id}`,
      "conflict",
    );
  }
}

export const yesFlag = {
  name: "yes",
  short: "y",
  aliases: ["force"],
  type: "boolean" as const,
  description: "Skip the confirmation prompt",
};

/** `--yes`, or a prompt on a terminal; off a terminal without `--yes` it is a usage error. */
export async function confirmOrYes(ctx: Context, yes: boolean, question: string): Promise<boolean> {
  if (yes) return true;
  if (!ctx.interactive) throw new UsageError("pass --yes to confirm when not on a terminal", ctx.commandPath);
  return ctx.prompt.confirm(question);
}
