/**
 * Disk credentials at rest: AES-256-GCM with a key that never leaves the control plane's data dir. The
 * database holds only `v1.<iv>.<tag>.<ciphertext>` (base64url), bound to the disk's id as associated
 * data, so a row copied onto another disk's id does not open.
 *
 * The key is 32 random bytes in a 0600 file: `CREATEOS_SANDBOX_DISK_KEY_FILE` when the operator gives one
 * (it must exist), else `<data dir>/disk-key`, generated on first start. Losing it loses every
 * registration's keys (re-register or rotate), not the buckets.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";

const KEY_BYTES = 32;
const IV_BYTES = 12;

export class KeyBox {
  private constructor(private readonly key: Buffer) {}

  static fromKey(key: Buffer): KeyBox {
    if (key.length !== KEY_BYTES) throw new Error(`disk key must be ${KEY_BYTES} bytes, got ${key.length}`);
    return new KeyBox(Buffer.from(key));
  }

  /** The operator's key file, or the data dir's (created 0600 with a fresh key when absent). */
  static load(path: string, create: boolean): KeyBox {
    if (!existsSync(path)) {
      if (!create) throw new Error(`disk key file ${path} does not exist`);
      // wx: two processes starting at once must not both write a key (one would lose its rows).
      try {
        writeFileSync(path, randomBytes(KEY_BYTES), { mode: 0o600, flag: "wx" });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
    }
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) chmodSync(path, 0o600);
    return KeyBox.fromKey(readFileSync(path));
  }

  seal(plain: string, aad: string): string {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    c.setAAD(Buffer.from(aad));
    const body = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return ["v1", iv, c.getAuthTag(), body]
      .map((x) => (typeof x === "string" ? x : x.toString("base64url")))
      .join(".");
  }

  /** Throws when the box was sealed with another key, for another id, or was altered. */
  open(sealed: string, aad: string): string {
    const [v, iv, tag, body] = sealed.split(".");
    if (v !== "v1" || iv === undefined || tag === undefined || body === undefined)
      throw new Error("not a sealed disk secret");
    const d = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64url"));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([d.update(Buffer.from(body, "base64url")), d.final()]).toString("utf8");
  }
}
