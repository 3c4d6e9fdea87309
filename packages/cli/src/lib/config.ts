import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Globals } from "../framework/args.js";

export const DEFAULT_API_URL = "https://api.sb.createos.sh";

export function homeDir(env: NodeJS.ProcessEnv): string {
  return env.HOME && env.HOME !== "" ? env.HOME : os.homedir();
}

export function configDir(env: NodeJS.ProcessEnv): string {
  return path.join(homeDir(env), ".createos");
}

export interface StoredConfig {
  api_url?: string;
}

export function readStoredToken(env: NodeJS.ProcessEnv): string | undefined {
  try {
    const t = fs.readFileSync(path.join(configDir(env), ".token"), "utf8").trim();
    return t === "" ? undefined : t;
  } catch {
    return undefined;
  }
}

export function readStoredConfig(env: NodeJS.ProcessEnv): StoredConfig {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(configDir(env), "config.json"), "utf8")) as unknown;
    return parsed && typeof parsed === "object" ? (parsed as StoredConfig) : {};
  } catch {
    return {};
  }
}

/** Writes a file readable only by the user, in a directory only the user can enter. */
function writePrivate(env: NodeJS.ProcessEnv, name: string, content: string): string {
  const dir = configDir(env);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const file = path.join(dir, name);
  // Write to a temp file first so a crash never leaves a half-written token behind.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return file;
}

export function saveLogin(env: NodeJS.ProcessEnv, token: string, apiUrl: string | undefined): void {
  writePrivate(env, ".token", token.trim() + "\n");
  const cfg = readStoredConfig(env);
  if (apiUrl !== undefined) cfg.api_url = apiUrl;
  writePrivate(env, "config.json", JSON.stringify(cfg, null, 2) + "\n");
}

/** Removes stored credentials; returns the files that existed. */
export function clearLogin(env: NodeJS.ProcessEnv): string[] {
  const removed: string[] = [];
  for (const name of [".token", ".oauth"]) {
    const file = path.join(configDir(env), name);
    try {
      fs.unlinkSync(file);
      removed.push(file);
    } catch {
      // absent is fine: logout is idempotent
    }
  }
  return removed;
}

export interface Credentials {
  apiKey: string | undefined;
  apiUrl: string;
  keySource: "flag" | "env" | "file" | "none";
}

/** Precedence: flag → environment → ~/.createos files → built-in default. */
export function resolveCredentials(
  globals: Pick<Globals, "apiKey" | "apiUrl">,
  env: NodeJS.ProcessEnv,
): Credentials {
  const nonEmpty = (v: string | undefined) => (v !== undefined && v.trim() !== "" ? v.trim() : undefined);
  let apiKey = nonEmpty(globals.apiKey);
  let keySource: Credentials["keySource"] = "flag";
  if (!apiKey) {
    apiKey = nonEmpty(env.CREATEOS_SANDBOX_API_KEY) ?? nonEmpty(env.CREATEOS_API_KEY);
    keySource = "env";
  }
  if (!apiKey) {
    apiKey = readStoredToken(env);
    keySource = "file";
  }
  if (!apiKey) keySource = "none";
  const apiUrl =
    nonEmpty(globals.apiUrl) ??
    nonEmpty(env.CREATEOS_SANDBOX_URL) ??
    nonEmpty(env.CREATEOS_SANDBOX_BASE_URL) ??
    nonEmpty(readStoredConfig(env).api_url) ??
    DEFAULT_API_URL;
  return { apiKey, apiUrl: apiUrl.replace(/\/+$/, ""), keySource };
}

/** `skp_abc…wxyz`: enough to recognise a key, not enough to use it. */
export function maskKey(key: string): string {
  if (key.length <= 10) return "****";
  return `${key.slice(0, 6)}…${key.slice(-4)}`;
}
