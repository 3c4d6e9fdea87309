import { randomBytes } from "node:crypto";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * A ULID: 48 bits of millisecond time then 80 random bits, Crockford base32, 26 characters.
 * Ids sort by creation time, which keeps list pages stable and index inserts append-only.
 */
export function ulid(now: number = Date.now()): string {
  let out = "";
  let t = now;
  // 10 chars × 5 bits = 50 bits; the top 2 are always zero for 48-bit times.
  for (let i = 0; i < 10; i++) {
    out = CROCKFORD[t % 32] + out;
    t = Math.floor(t / 32);
  }
  const rnd = randomBytes(10);
  // 80 bits → 16 chars of 5 bits, read big-endian across the byte boundary.
  let acc = 0;
  let bits = 0;
  for (const byte of rnd) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += CROCKFORD[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

export const newSandboxId = (): string => `sb-${ulid().toLowerCase()}`;
export const newNetworkId = (): string => `net-${ulid().toLowerCase()}`;
export const newDiskId = (): string => `disk_${ulid().toLowerCase()}`;
export const newTemplateId = (): string => `tpl_${ulid().toLowerCase()}`;
export const newUserId = (): string => `usr_${ulid().toLowerCase()}`;
export const newKeyId = (): string => `key_${ulid().toLowerCase()}`;

const SANDBOX_ID = /^sb[-_]([0-9a-hjkmnp-tv-z]{26})$/i;

/** Canonical `sb-<lower ulid>` for an id given in either historical spelling, or undefined. */
export function canonicalSandboxId(raw: string): string | undefined {
  const m = SANDBOX_ID.exec(raw);
  return m ? `sb-${m[1]!.toLowerCase()}` : undefined;
}

/** Networks: `net-` is ours, `net_` appears in published examples; both name the same row. */
export function canonicalNetworkId(raw: string): string | undefined {
  const m = /^net[-_]([0-9a-hjkmnp-tv-z]{26})$/i.exec(raw);
  return m ? `net-${m[1]!.toLowerCase()}` : undefined;
}
