import { encodeTime, ulid as randomUlid } from "ulid";

/**
 * A ULID (the `ulid` package): 48 bits of millisecond time then 80 random bits, Crockford base32, 26
 * characters. Ids sort by creation time, which keeps list pages stable and index inserts append-only. The
 * time part is encoded here because the package reads a time of 0 as "now".
 */
export function ulid(now: number = Date.now()): string {
  return encodeTime(now, 10) + randomUlid().slice(10);
}

export const newSandboxId = (): string => `sb-${ulid().toLowerCase()}`;
export const newNetworkId = (): string => `net-${ulid().toLowerCase()}`;
export const newDiskId = (): string => `disk_${ulid().toLowerCase()}`;
export const newTemplateId = (): string => `tpl_${ulid().toLowerCase()}`;
export const newUserId = (): string => `usr_${ulid().toLowerCase()}`;
export const newKeyId = (): string => `key_${ulid().toLowerCase()}`;

const SANDBOX_ID = /^sb[-_]([0-9a-hjkmnp-tv-z]{26})$/i;
const CANONICAL_SANDBOX_ID = /^sb-[0-9a-hjkmnp-tv-z]{26}$/;

/** Canonical `sb-<lower ulid>` for an id given in either historical spelling, or undefined. */
export function canonicalSandboxId(raw: string): string | undefined {
  // Nearly every id arrives as we wrote it: that one is answered without a match object and a new string
  // (this runs on every sandbox route; it showed in the GET by id's profile).
  if (CANONICAL_SANDBOX_ID.test(raw)) return raw;
  const m = SANDBOX_ID.exec(raw);
  return m ? `sb-${m[1]!.toLowerCase()}` : undefined;
}

/** Networks: `net-` is ours, `net_` appears in published examples; both name the same row. */
export function canonicalNetworkId(raw: string): string | undefined {
  const m = /^net[-_]([0-9a-hjkmnp-tv-z]{26})$/i.exec(raw);
  return m ? `net-${m[1]!.toLowerCase()}` : undefined;
}
