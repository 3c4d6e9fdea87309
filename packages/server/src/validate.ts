/**
 * Input grammars a JSON Schema cannot phrase (egress rules, SSH keys, envs, paths), which the schemas
 * (schema.ts) call as the `grammar` keyword, and the queries shared by several routes.
 */
import { isIP } from "node:net";
import { SANDBOX_STATUSES, type SandboxStatus } from "@createos-sandbox/protocol/api";
import { type Static, Type } from "@sinclair/typebox";
import { DockerfileError, planDockerfile } from "./templates/dockerfile.js";

export const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const RESOURCE_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const ENV_MAX_KEYS = 64;
export const ENV_MAX_VALUE_BYTES = 4096;
export const ENV_MAX_TOTAL_BYTES = 65536;
export const MAX_EGRESS_RULES = 256;
export const MAX_SSH_KEYS = 64;

export function checkEnvs(v: unknown, name: string): string | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    return `${name} must be an object of KEY: "value"`;
  const entries = Object.entries(v);
  if (entries.length > ENV_MAX_KEYS) return `${name} may hold at most ${ENV_MAX_KEYS} keys`;
  let total = 0;
  for (const [k, val] of entries) {
    if (!ENV_KEY_RE.test(k) || k.length > 256)
      return `${name} key ${JSON.stringify(k.slice(0, 64))} must match ${ENV_KEY_RE.source}`;
    if (typeof val !== "string") return `${name}.${k} must be a string`;
    const bytes = Buffer.byteLength(val);
    if (bytes > ENV_MAX_VALUE_BYTES) return `${name}.${k} exceeds ${ENV_MAX_VALUE_BYTES} bytes`;
    if (val.includes("\0")) return `${name}.${k} must not contain NUL`;
    total += bytes + k.length;
  }
  if (total > ENV_MAX_TOTAL_BYTES) return `${name} exceed ${ENV_MAX_TOTAL_BYTES} bytes in total`;
  return undefined;
}

const HOST_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

function validHostname(h: string): boolean {
  if (h.length > 253) return false;
  return h.split(".").every((l) => HOST_LABEL.test(l));
}

function validPort(p: string): boolean {
  if (!/^\d{1,5}$/.test(p)) return false;
  const n = Number(p);
  return n >= 1 && n <= 65535;
}

function validAddrOrCidr(a: string): boolean {
  const slash = a.indexOf("/");
  if (slash === -1) return isIP(a) !== 0;
  const ip = a.slice(0, slash);
  const bits = a.slice(slash + 1);
  const fam = isIP(ip);
  if (fam === 0 || !/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (fam === 4 ? 32 : 128);
}

/** Egress grammar: `*`, `host`, `host:port`, `*.host`, `ip`, `ip:port`, `cidr`, `cidr:port` (IPv6 as `[addr]:port`). */
export function egressRuleError(rule: string): string | undefined {
  const bad = `invalid egress rule ${JSON.stringify(rule.slice(0, 100))}: expected host, host:port, *.host, ip, ip:port, cidr or cidr:port`;
  if (rule === "*") return undefined;
  if (rule.length > 300 || rule.trim() !== rule || rule === "") return bad;
  let target = rule;
  if (rule.startsWith("[")) {
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(rule);
    if (!m || !validAddrOrCidr(m[1]!) || isIP(m[1]!.split("/")[0]!) !== 6) return bad;
    return m[2] === undefined || validPort(m[2]) ? undefined : bad;
  }
  const colons = rule.split(":").length - 1;
  if (colons === 1) {
    const i = rule.lastIndexOf(":");
    if (!validPort(rule.slice(i + 1))) return bad;
    target = rule.slice(0, i);
  } else if (colons > 1) {
    return validAddrOrCidr(rule) ? undefined : bad;
  }
  if (/^[\d./]+$/.test(target)) return validAddrOrCidr(target) ? undefined : bad;
  const host = target.startsWith("*.") ? target.slice(2) : target;
  return validHostname(host) ? undefined : bad;
}

const SSH_TYPES = new Set([
  "ssh-ed25519",
  "ssh-rsa",
  "ssh-dss",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
]);

/** `type base64 [comment]` with the key blob's embedded type matching; returns the canonical line. */
export function canonicalSshKey(line: string): string | undefined {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2 || line.length > 16384) return undefined;
  const [type, b64, ...comment] = parts as [string, string, ...string[]];
  if (!SSH_TYPES.has(type) || !/^[A-Za-z0-9+/]+={0,3}$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, "base64");
  if (blob.length < 4) return undefined;
  const n = blob.readUInt32BE(0);
  if (n !== Buffer.byteLength(type) || blob.subarray(4, 4 + n).toString("latin1") !== type) return undefined;
  return [type, b64, ...comment].join(" ");
}

export function sshKeyError(line: string): string | undefined {
  return canonicalSshKey(line)
    ? undefined
    : `invalid OpenSSH public key: ${JSON.stringify(line.slice(0, 40))}`;
}

/** Keys deduplicated by (type, blob); the first comment wins. */
export function mergeSshKeys(existing: string[], added: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const k of [...existing, ...added]) {
    const c = canonicalSshKey(k);
    if (!c) continue;
    const id = c.split(" ").slice(0, 2).join(" ");
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(c);
  }
  return out;
}

/** The Dockerfile grammar and template rules (templates/dockerfile.ts); returns the first violation. */
export function dockerfileError(df: string): string | undefined {
  try {
    planDockerfile(df);
    return undefined;
  } catch (e) {
    if (e instanceof DockerfileError) return e.message;
    throw e;
  }
}

export function absolutePathError(p: string | null, field = "path"): Record<string, string> | undefined {
  if (p === null || p === "") return { [field]: `${field} is required` };
  if (!p.startsWith("/")) return { [field]: `${field} must be absolute: ${JSON.stringify(p.slice(0, 200))}` };
  if (p.includes("\0")) return { [field]: `${field} must not contain NUL` };
  if (p.length > 4096) return { [field]: `${field} is longer than 4096 characters` };
  return undefined;
}

const uint = (name: string) =>
  Type.Optional(Type.String({ pattern: "^(\\d{1,9})?$", "x-msg": `${name} must be a non-negative integer` }));

/** `?limit=&offset=` of every list route. */
export const PageQuery = Type.Object({ limit: uint("limit"), offset: uint("offset") });

/**
 * `?status=` of the sandbox list beside the page: one of the statuses, or empty for all. It is looked at only
 * once `limit` and `offset` are well-formed, as it always was.
 */
export const SandboxListQuery = Type.Object(PageQuery.properties, {
  if: PageQuery,
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then, never awaited
  then: Type.Object({
    status: Type.Optional(
      Type.Unsafe<SandboxStatus | "">({
        type: "string",
        enum: ["", ...SANDBOX_STATUSES],
        "x-msg": "unknown status: {value}",
      }),
    ),
  }),
});
export type SandboxListQuery = Static<typeof PageQuery> & { status?: SandboxStatus | "" };

/** `limit` (default 50, clamped to 500) and `offset` (default 0) of a query `PageQuery` has checked. */
export function pageParams(q: Static<typeof PageQuery>): { limit: number; offset: number } {
  const limit = q.limit ? Number(q.limit) : 50;
  return { limit: Math.min(limit || 50, 500), offset: q.offset ? Number(q.offset) : 0 };
}
