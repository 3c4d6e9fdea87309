/**
 * Credential redaction for everything the SDK lets escape: hook payloads, error messages and URLs.
 * Pure functions; inputs are never mutated.
 */
import type { HeadersInit } from "./web-types.js";

const REDACTED = "redacted";

export const SENSITIVE_HEADER_NAMES: ReadonlySet<string> = new Set([
  "authorization",
  "cookie",
  "set-cookie",
  "x-api-key",
  "x-access-token",
  "x-auth-token",
  "x-csrf-token",
  "proxy-authorization",
]);

export const SENSITIVE_QUERY_PARAMS: ReadonlySet<string> = new Set([
  "token",
  "api_key",
  "apikey",
  "access_token",
  "auth_token",
  "password",
  "secret",
]);

function isSensitiveHeader(name: string): boolean {
  const lower = name.toLowerCase();
  // Catch-all suffixes so a custom header such as X-Session-Token is not leaked.
  return SENSITIVE_HEADER_NAMES.has(lower) || lower.endsWith("-token") || lower.endsWith("-key");
}

export function redactHeaders(headers: Headers | HeadersInit): Record<string, string> {
  const out: Record<string, string> = {};
  new Headers(headers).forEach((value, key) => {
    out[key] = isSensitiveHeader(key) ? REDACTED : value;
  });
  return out;
}

export function redactQuery(query: URLSearchParams): URLSearchParams {
  const out = new URLSearchParams();
  for (const [key, value] of query) {
    out.append(key, SENSITIVE_QUERY_PARAMS.has(key.toLowerCase()) ? REDACTED : value);
  }
  return out;
}

/** Strips user-info and redacts credential query params; non-URLs are returned as given. */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  parsed.username = "";
  parsed.password = "";
  parsed.search = redactQuery(parsed.searchParams).toString();
  return parsed.toString();
}

// API keys (`skp_…`) and JWTs (three base64url segments starting with `eyJ`) are the two credential
// forms the server may echo back in an error ("invalid api key skp_…"); never let them reach a log.
const SECRET_PATTERNS: readonly RegExp[] = [
  /\bskp_[A-Za-z0-9_-]{4,}/g,
  /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g,
];

/** Replaces credential-looking substrings (and any explicitly given secrets) in free text. */
export function redactSecrets(text: string, extraSecrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const secret of extraSecrets) {
    // Very short values would blank out ordinary words; real credentials are long.
    if (secret && secret.length >= 8) out = out.split(secret).join(REDACTED);
  }
  for (const re of SECRET_PATTERNS) out = out.replace(re, REDACTED);
  return out;
}
