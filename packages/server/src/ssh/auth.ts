/**
 * Who an SSH login is for: the username is a sandbox id (`sb-…`), or a sandbox name when exactly one live
 * sandbox of that name lists the offered key (names are unique per tenant only, so the key decides whose)
 * and no other account's live sandbox lists it, and the key must be one of the sandbox's `ssh_pubkeys`. Failed logins are counted per source address.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "@createos-sandbox/hostd/sys/fs";
import ssh2, { type ParsedKey } from "ssh2";
import { RateLimiter } from "../http/auth.js";
import { HELD } from "../state.js";
import type { SandboxRow, Store } from "../store/types.js";
import { canonicalSandboxId } from "../ulid.js";

// ssh2 is CommonJS: its named exports exist only on the default one under ESM.
const { utils } = ssh2;

/**
 * The gateway's host key: made once into the data dir (0600), the same on every later start. About one in
 * 250 keys from ssh2's own ed25519 generator carries a 31-byte public key (a leading zero dropped; measured
 * 913 of 228,867), which its parser then refuses: a key is kept only once it parses, and a stored one that
 * does not parse (it was never served) is made again.
 */
export async function loadHostKey(dataDir: string): Promise<string> {
  const file = join(dataDir, "ssh-host-key");
  try {
    const stored = await readFile(file, "utf8");
    if (!(utils.parseKey(stored) instanceof Error)) return stored;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const key = newHostKey();
  await writeFileAtomic(file, key, 0o600);
  return key;
}

function newHostKey(): string {
  for (let i = 0; i < 20; i++) {
    const pair = utils.generateKeyPairSync("ed25519", { comment: "createos-sandbox gateway" });
    if (!(utils.parseKey(pair.private) instanceof Error)) return pair.private;
  }
  throw new Error("could not make an SSH host key that parses");
}

/** A key line of `ssh_pubkeys` as ssh2 reads it, or undefined when it does not parse. */
function parsed(line: string): ParsedKey | undefined {
  const k = utils.parseKey(line);
  return k instanceof Error ? undefined : Array.isArray(k) ? k[0] : k;
}

/** The sandbox's listed key whose public blob is `blob`. */
export function matchingKey(row: Pick<SandboxRow, "ssh_pubkeys">, blob: Buffer): ParsedKey | undefined {
  for (const line of row.ssh_pubkeys) {
    const k = parsed(line);
    if (k?.getPublicSSH().equals(blob)) return k;
  }
  return undefined;
}

/** Statuses whose sandbox a login may name (the session then says what it can do). */
const LOGIN: readonly string[] = HELD;

/** The sandbox `username` names for the key `blob`, with the key that matched, or why not (for the log). */
export async function resolveLogin(
  store: Store,
  username: string,
  blob: Buffer,
): Promise<{ row: SandboxRow; key: ParsedKey } | { refused: string }> {
  const id = canonicalSandboxId(username);
  const rows = id
    ? [await store.getSandbox(id)].filter((r): r is SandboxRow => r !== undefined)
    : (await store.sandboxesInStatus([...HELD])).filter((r) => r.name === username);
  const live = rows.filter((r) => LOGIN.includes(r.status));
  if (!live.length) return { refused: "unknown sandbox" };
  const hits: { row: SandboxRow; key: ParsedKey }[] = [];
  for (const row of live) {
    const key = matchingKey(row, blob);
    if (key) hits.push({ row, key });
  }
  if (hits.length > 1) return { refused: "name names several sandboxes with this key; use the id" };
  const hit = hits[0];
  if (!hit) return { refused: "key not listed" };
  // Names are the tenant's, public keys are anyone's: another account can list your key on a sandbox of
  // your sandbox's name. A name logs in only when no other account's live sandbox lists the key, so
  // such a copy is refused rather than chosen (the id form names the sandbox itself).
  if (!id) {
    const others = (await store.sandboxesInStatus([...HELD])).filter((r) => r.user_id !== hit.row.user_id);
    if (others.some((r) => matchingKey(r, blob)))
      return {
        refused: "this key is listed by more than one account's sandboxes; log in with the sandbox id",
      };
  }
  return hit;
}

/**
 * Failed logins per source address, in a token bucket (the API's failed-auth settings): once an address
 * has used its burst, its connections are closed before the handshake until a token is back.
 */
export class LoginFailures {
  private readonly bucket: RateLimiter;

  constructor(perSecond: number, burst: number) {
    this.bucket = new RateLimiter(perSecond, burst);
  }

  /** Seconds until `addr` may try again; 0 when it may now. */
  blocked(addr: string): number {
    return this.bucket.peek(addr);
  }

  failed(addr: string): void {
    this.bucket.take(addr);
  }
}
