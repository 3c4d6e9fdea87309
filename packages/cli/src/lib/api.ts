import type { Globals } from "../framework/args.js";
import { CliError, notFound } from "../framework/errors.js";
import { resolveCredentials } from "./config.js";
import { type Client, type Sandbox, type SandboxStatus, type SandboxView, loadSdk } from "./sdk.js";

export interface Api {
  client: Client;
  baseUrl: string;
  apiKey: string;
  /** A sandbox handle from an id (`sb-…` verbatim) or a name (protocol.md §5.5). */
  sandbox(ref: string): Promise<Sandbox>;
  /** Sandboxes of any status, newest first, at most `limit` (name resolution, pickers). */
  sandboxes(limit?: number, status?: SandboxStatus): Promise<Sandbox[]>;
}

export interface Page<T> {
  data: T[];
  pagination?: { total: number; limit: number; offset: number; count: number };
}

export function isSandboxId(ref: string): boolean {
  return ref.startsWith("sb-") || ref.startsWith("sb_");
}

const TERMINAL = new Set(["destroyed", "destroying", "failed"]);

/**
 * The sandbox a name refers to: exact, case-sensitive name matches; a live one beats a destroyed
 * one (names are only unique among live sandboxes), then the newest `created_at` wins.
 */
export function pickByName<T extends { data: Pick<SandboxView, "name" | "created_at" | "status"> }>(
  items: T[],
  name: string,
): T | undefined {
  const hits = items.filter((s) => s.data.name === name);
  hits.sort((a, b) => {
    const live = Number(TERMINAL.has(a.data.status)) - Number(TERMINAL.has(b.data.status));
    if (live !== 0) return live;
    return Date.parse(b.data.created_at) - Date.parse(a.data.created_at);
  });
  return hits[0];
}

export function apiStatus(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === "number" ? s : undefined;
}

export async function connect(
  globals: Globals,
  env: NodeJS.ProcessEnv,
  debug: (line: string) => void,
): Promise<Api> {
  const creds = resolveCredentials(globals, env);
  if (!creds.apiKey) {
    throw new CliError(
      "not logged in: run `createos login`, pass --api-key, or set CREATEOS_SANDBOX_API_KEY",
      "unauthorized",
    );
  }
  const sdk = await loadSdk();
  const client = new sdk.CreateosSandboxClient({
    apiKey: creds.apiKey,
    baseUrl: creds.apiUrl,
    // Someone is waiting at a terminal: retry briefly, never park for a long Retry-After.
    retry: { maxRetries: 2, baseDelayMs: 500, maxDelayMs: 3000 },
    hooks: globals.debug
      ? {
          onRequest: (c) => debug(`→ ${c.method} ${c.url}${c.attempt > 1 ? ` (attempt ${c.attempt})` : ""}`),
          onResponse: (c) =>
            debug(
              `← ${c.status} ${c.method} ${c.url} ${Math.round(c.durationMs)}ms${c.requestId ? ` [${c.requestId}]` : ""}`,
            ),
          onRetry: (c) =>
            debug(
              `↻ retrying ${c.method} ${c.url} in ${c.delayMs}ms (${c.reason}${c.status ? ` ${c.status}` : ""})`,
            ),
        }
      : undefined,
  });
  const api: Api = {
    client,
    baseUrl: creds.apiUrl,
    apiKey: creds.apiKey,
    async sandboxes(limit = 200, status?: SandboxStatus) {
      const list = await client.listSandboxes({ limit, ...(status ? { status } : {}) });
      return list.sort((a, b) => Date.parse(b.data.created_at) - Date.parse(a.data.created_at));
    },
    async sandbox(ref: string) {
      if (isSandboxId(ref)) {
        try {
          return await client.getSandbox(ref);
        } catch (err) {
          if (apiStatus(err) === 404) throw notFound("sandbox", ref);
          throw err;
        }
      }
      const hit = pickByName(await api.sandboxes(200), ref);
      if (!hit) throw notFound("sandbox", ref);
      return hit;
    },
  };
  return api;
}

const CODE_BY_STATUS: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  402: "payment_required",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  413: "bad_request",
  422: "bad_request",
  429: "rate_limited",
};

/** The server's own words from a JSend fail/error envelope, joined into one line. */
function envelopeMessage(err: unknown): string | undefined {
  const env = (err as { envelope?: unknown } | null)?.envelope as
    | { status?: string; data?: unknown; message?: unknown }
    | undefined;
  if (!env) return undefined;
  if (env.status === "error" && typeof env.message === "string") return env.message;
  const data = env.data;
  if (typeof data === "string") return data;
  if (data && typeof data === "object") {
    const parts = Object.entries(data as Record<string, unknown>)
      .filter(([k]) => k !== "code")
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([, v]) => (typeof v === "string" ? v : JSON.stringify(v)));
    if (parts.length) return parts.join("; ");
  }
  return undefined;
}

export interface Described {
  code: string;
  message: string;
  exitCode: number;
}

/** Turns anything thrown into one line and a machine code (protocol.md §5.3). */
export function describeError(err: unknown, apiUrl?: string): Described {
  if (err instanceof CliError) return { code: err.code, message: err.message, exitCode: err.exitCode };
  const status = apiStatus(err);
  const name = (err as { constructor?: { name?: string }; name?: string } | null)?.constructor?.name ?? "";
  const raw = err instanceof Error ? err.message : String(err);
  if (status !== undefined) {
    const code = CODE_BY_STATUS[status] ?? (status >= 500 ? "server_error" : "api_error");
    let message = envelopeMessage(err) ?? raw;
    if (status === 401) message = `unauthorized: ${message} (check your API key or run \`createos login\`)`;
    // 501 is the server saying a capability is not built (yet); its own words say which.
    else if (status >= 500 && status !== 501) message = `server error (${status}): ${message}`;
    return { code, message, exitCode: 1 };
  }
  if (name.includes("ConnectionError") || /ECONNREFUSED|ENOTFOUND|fetch failed/.test(raw)) {
    return { code: "error", message: `cannot reach ${apiUrl ?? "the server"}: ${raw}`, exitCode: 1 };
  }
  if (name.includes("TimeoutError")) return { code: "error", message: `timed out: ${raw}`, exitCode: 1 };
  return { code: "error", message: raw || "unknown error", exitCode: 1 };
}

/** Runs a POSIX shell script in the guest (helpers for sync and ssh prep). */
export async function sh(sb: Sandbox, script: string, signal?: AbortSignal) {
  const res = await sb.runCommand("sh", ["-c", script], {
    timeoutMs: 0,
    retry: false,
    ...(signal ? { signal } : {}),
  });
  return res.result;
}

/** Single-quotes a string for a POSIX shell. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
