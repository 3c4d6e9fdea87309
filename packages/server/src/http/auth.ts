/** Admission: who the caller is (API key or access token, briefly cached) and its per-credential rate limit. */
import type { IncomingHttpHeaders } from "node:http";
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "../config.js";
import type { Principal, Store } from "../store/types.js";

/** Per-credential token buckets. In memory: each replica limits on its own (documented in docs/server.md). */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {}

  /** Seconds to wait, or 0 when the request may pass. */
  take(key: string): number {
    if (this.rate <= 0) return 0;
    const now = performance.now() / 1000;
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
      if (this.buckets.size > 100_000) this.buckets.clear();
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.rate));
  }
}

export class Admission {
  private readonly limiter: RateLimiter;
  /**
   * Successful lookups, kept `authCacheMs` (default 1 s): a database read per request costs more than the
   * rest of a GET. A key revoked from another process (`keys revoke`) is refused within that time.
   */
  private readonly cache = new Map<string, { principal: Principal; until: number }>();

  constructor(
    private readonly cfg: ServerConfig,
    private readonly store: Store,
  ) {
    this.limiter = new RateLimiter(cfg.rateLimitPerSecond, cfg.rateLimitBurst);
  }

  /** Resolves the credential; X-Auth-Token and X-Access-Token are consulted before X-Api-Key (protocol.md §1.2). */
  async authenticate(h: IncomingHttpHeaders): Promise<Principal> {
    const secret = (h["x-auth-token"] ?? h["x-access-token"] ?? h["x-api-key"]) as string | undefined;
    if (secret === undefined || secret === "") throw apiError("auth_missing");
    if (secret.length > 512) throw apiError("auth_invalid");
    const now = performance.now();
    const hit = this.cache.get(secret);
    if (hit && hit.until > now) return hit.principal;
    const p = await this.store.authenticate(secret);
    if (!p) throw apiError("auth_invalid");
    if (this.cfg.authCacheMs > 0) {
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(secret, { principal: p, until: now + this.cfg.authCacheMs });
    }
    return p;
  }

  /** Drops cached credentials at once (rotated or deleted access tokens); other changes wait out the TTL. */
  forget(match: (p: Principal) => boolean): void {
    for (const [k, v] of this.cache) if (match(v.principal)) this.cache.delete(k);
  }

  /** Credential check plus the per-credential token bucket. */
  async admit(h: IncomingHttpHeaders): Promise<Principal> {
    const principal = await this.authenticate(h);
    const wait = this.limiter.take(principal.credential_id);
    if (wait > 0) {
      throw Object.assign(
        apiError("rate_limited", { rate: this.cfg.rateLimitPerSecond, burst: this.cfg.rateLimitBurst }),
        { retryAfter: wait },
      );
    }
    return principal;
  }
}
