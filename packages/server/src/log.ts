/**
 * Structured JSON logs, one object per line on stdout.
 *
 * Request lines are buffered and flushed every 100 ms (or at 64 KiB): at thousands of requests per second a
 * write per line — a syscall each — would cost more than the request itself. Lines at warn/error and the
 * "listening" line are flushed at once, and the buffer is flushed on exit, so a crash report or a test
 * reading the port never misses them.
 */
export type Level = "debug" | "info" | "warn" | "error";

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Info line written before returning. */
  now(msg: string, fields?: Record<string, unknown>): void;
  flush(): void;
}

const SECRET_KEYS =
  /^(x-api-key|x-access-token|x-auth-token|authorization|cookie|api_key|key|token|secret|secret_key|access_key|envs|env|credentials)$/i;

/** Values under credential-like keys never reach the log. */
function redact(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    if (SECRET_KEYS.test(k)) out[k] = "[redacted]";
    else if (v instanceof Error) out[k] = { message: v.message, stack: v.stack };
    else out[k] = v;
  }
  return out;
}

export function createLogger(write: (s: string) => void = (s) => process.stdout.write(s)): Logger {
  let buf = "";
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (buf) {
      const s = buf;
      buf = "";
      write(s);
    }
  };
  const line = (level: Level, msg: string, fields: Record<string, unknown> | undefined, sync: boolean) => {
    buf += `${JSON.stringify({ ts: new Date().toISOString(), level, msg, ...(fields ? redact(fields) : {}) })}\n`;
    if (sync || buf.length > 65536) flush();
    else if (!scheduled) {
      scheduled = true;
      setTimeout(flush, 100).unref();
    }
  };
  process.once("exit", flush);
  return {
    info: (m, f) => line("info", m, f, false),
    warn: (m, f) => line("warn", m, f, true),
    error: (m, f) => line("error", m, f, true),
    now: (m, f) => line("info", m, f, true),
    flush,
  };
}
