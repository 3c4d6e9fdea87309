/**
 * Per-tenant caps on what a tenant's open streams hold in this process: how many exec, file, shell and
 * tunnel streams are open at once, and how many bytes of buffered exec output may be in flight. The host
 * daemon caps each VM on its own; these keep one tenant with many sandboxes from taking the process's
 * memory or sockets. Over a cap → 429 with Retry-After, before the host daemon is asked.
 */
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "./config.js";

type Caps = Pick<ServerConfig, "maxStreamsPerTenant" | "maxExecBufferMibPerTenant">;

/** What one stream holds; `release()` gives it back (idempotent). */
export interface StreamClaim {
  release(): void;
}

export class TenantStreams {
  private readonly streams = new Map<string, number>();
  private readonly buffered = new Map<string, number>();

  constructor(private readonly caps: Caps) {}

  /** Claims one stream (and `bufferBytes` of buffered output) for `userId`, or throws the 429. */
  open(userId: string, bufferBytes = 0): StreamClaim {
    const n = this.streams.get(userId) ?? 0;
    const max = this.caps.maxStreamsPerTenant;
    if (max > 0 && n >= max) throw apiError("tenant_streams_busy", { limit: max });
    const held = this.buffered.get(userId) ?? 0;
    const maxMib = this.caps.maxExecBufferMibPerTenant;
    if (bufferBytes > 0 && maxMib > 0 && held + bufferBytes > maxMib * 1024 * 1024)
      throw apiError("tenant_exec_buffer_busy", { limit: maxMib });
    this.streams.set(userId, n + 1);
    if (bufferBytes > 0) this.buffered.set(userId, held + bufferBytes);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        dec(this.streams, userId, 1);
        if (bufferBytes > 0) dec(this.buffered, userId, bufferBytes);
      },
    };
  }

  /** Open streams and buffered bytes of a tenant (tests, metrics). */
  usage(userId: string): { streams: number; bufferedBytes: number } {
    return { streams: this.streams.get(userId) ?? 0, bufferedBytes: this.buffered.get(userId) ?? 0 };
  }
}

function dec(m: Map<string, number>, k: string, by: number): void {
  const left = (m.get(k) ?? by) - by;
  if (left <= 0) m.delete(k);
  else m.set(k, left);
}
