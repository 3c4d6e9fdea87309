/**
 * Structured JSON logs through pino, one object per line on stdout: `{"level":"info","ts":…,"msg":…,…}`.
 * The message goes first in the merge object so log lines read (and grep) as `"msg":"listening",…`.
 *
 * stdout is written asynchronously (sonic-boom coalesces lines while a write is in flight): at thousands of
 * requests per second a write per line would cost more than the request. `now()` and warn/error lines
 * flush at once, and pino flushes the rest on exit, so a crash report or a test reading the port never
 * misses them.
 */
import pino from "pino";

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Info line written before returning. */
  now(msg: string, fields?: Record<string, unknown>): void;
  flush(): void;
}

/** Values under credential-like keys never reach the log (top-level keys, as the fields are flat). */
const SECRET_KEYS = (
  "x-api-key x-access-token x-auth-token authorization cookie api_key key token secret secret_key access_key " +
  "envs env credentials"
).split(" ");
const REDACT_PATHS = [...SECRET_KEYS, ...SECRET_KEYS.map((k) => k.toUpperCase())].map(
  (k) => `[${JSON.stringify(k)}]`,
);

const errorFields = (v: unknown) => (v instanceof Error ? { message: v.message, stack: v.stack } : v);

export function createLogger(write?: (s: string) => void): Logger {
  const dest = write ? { write } : pino.destination({ sync: false });
  const p = pino(
    {
      base: null,
      formatters: { level: (label) => ({ level: label }) },
      timestamp: () => `,"ts":"${new Date().toISOString()}"`,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      serializers: { err: errorFields, error: errorFields },
    },
    dest,
  );
  const flush = () => {
    if ("flushSync" in dest) {
      try {
        dest.flushSync();
      } catch {
        // A write is still in flight or the fd is not open yet: sonic-boom delivers it on its own.
      }
    }
  };
  const line = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) =>
    p[level]({ msg, ...fields });
  const synced = (level: "info" | "warn" | "error") => (m: string, f?: Record<string, unknown>) => {
    line(level, m, f);
    flush();
  };
  return {
    info: (m, f) => line("info", m, f),
    warn: synced("warn"),
    error: synced("error"),
    now: synced("info"),
    flush,
  };
}
