/**
 * Admission: who the caller is (API key or access token, briefly cached), its tenant's rate limit, and a
 * limit per client address on failed authentications (so keys cannot be guessed at line rate).
 */
import type { IncomingHttpHeaders } from "node:http";
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "../config.js";
import type { Principal, Store } from "../store/types.js";

/** Token buckets by key. In memory: each replica limits on its own (documented in docs/server.md). */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {}

  /** Seconds to wait, or 0 when the request may pass. */
  take(key: string): number {
    if (this.rate <= 0) return 0;
    const b = this.bucket(key);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return this.wait(b.tokens);
  }

  /** Seconds until `key` has a token again, without taking one (0: it has one). */
  peek(key: string): number {
    if (this.rate <= 0 || !this.buckets.has(key)) return 0;
    const b = this.bucket(key);
    return b.tokens >= 1 ? 0 : this.wait(b.tokens);
  }

  private wait(tokens: number): number {
    return Math.max(1, Math.ceil((1 - tokens) / this.rate));
  }

  private bucket(key: string): { tokens: number; at: number } {
    const now = performance.now() / 1000;
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: now };
      if (this.buckets.size >= 100_000) this.buckets.clear();
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate);
    b.at = now;
    return b;
  }
}

/** The subprotocol a browser names to carry its key (Kubernetes' pattern; browsers cannot set headers). */
export const BEARER_SUBPROTOCOL = "base64url.bearer.authorization.k8s.io.";

/** The key in a `Sec-WebSocket-Protocol` list: base64url, no padding, after BEARER_SUBPROTOCOL. */
export function subprotocolBearer(header: string | string[] | undefined): string | undefined {
  if (typeof header !== "string") return undefined;
  for (const p of header.split(",")) {
    const t = p.trim();
    if (t.startsWith(BEARER_SUBPROTOCOL)) {
      const enc = t.slice(BEARER_SUBPROTOCOL.length);
      return /^[A-Za-z0-9_-]+$/.test(enc) ? Buffer.from(enc, "base64url").toString("utf8") : t;
    }
  }
  return undefined;
}

export class Admission {
  private readonly limiter: RateLimiter;
  private readonly authFailures: RateLimiter;
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
    this.authFailures = new RateLimiter(cfg.authFailPerSecond, cfg.authFailBurst);
  }

  /**
   * Resolves the credential; X-Auth-Token and X-Access-Token are consulted before X-Api-Key (protocol.md
   * §1.2), and a WebSocket's bearer subprotocol last. A credential in the cache is answered at once, without
   * a promise: this runs on every request.
   */
  private authenticate(h: IncomingHttpHeaders): Principal | Promise<Principal> {
    const secret = (h["x-auth-token"] ?? h["x-access-token"] ?? h["x-api-key"]) as string | undefined;
    return this.lookup(secret ?? subprotocolBearer(h["sec-websocket-protocol"]));
  }

  private lookup(secret: string | undefined): Principal | Promise<Principal> {
    if (secret === undefined || secret === "") throw apiError("auth_missing");
    if (secret.length > 512) throw apiError("auth_invalid");
    const now = performance.now();
    const hit = this.cache.get(secret);
    if (hit && hit.until > now) return hit.principal;
    return this.store.authenticate(secret).then((p) => {
      if (!p) throw apiError("auth_invalid");
      if (this.cfg.authCacheMs > 0) {
        if (this.cache.size >= 10_000) this.cache.clear();
        this.cache.set(secret, { principal: p, until: now + this.cfg.authCacheMs });
      }
      return p;
    });
  }

  /** Drops cached credentials at once (rotated or deleted access tokens); other changes wait out the TTL. */
  forget(match: (p: Principal) => boolean): void {
    for (const [k, v] of this.cache) if (match(v.principal)) this.cache.delete(k);
  }

  /**
   * Credential check plus the tenant's token bucket. An address whose failed attempts emptied its bucket is
   * refused before its credential is looked at, whatever it sends: a guess must not be told apart by its
   * answer. Throws or answers at once when it can (a cached credential), else through the promise.
   */
  admit(h: IncomingHttpHeaders, ip: string): Principal | Promise<Principal> {
    const blocked = this.authFailures.peek(ip);
    if (blocked > 0) throw Object.assign(apiError("auth_rate_limited"), { retryAfter: blocked });
    let who: Principal | Promise<Principal>;
    try {
      who = this.authenticate(h);
    } catch (e) {
      return this.failed(e, ip);
    }
    return who instanceof Promise
      ? who.then(
          (p) => this.limit(p),
          (e) => this.failed(e, ip),
        )
      : this.limit(who);
  }

  /** A refused credential counts against its address (a missing one does not). */
  private failed(e: unknown, ip: string): never {
    if ((e as { code?: string }).code === "auth_invalid") this.authFailures.take(ip);
    throw e;
  }

  private limit(principal: Principal): Principal {
    const wait = this.limiter.take(principal.user_id);
    if (wait > 0) {
      throw Object.assign(
        apiError("rate_limited", { rate: this.cfg.rateLimitPerSecond, burst: this.cfg.rateLimitBurst }),
        { retryAfter: wait },
      );
    }
    return principal;
  }
}
