/**
 * Structured JSON logs through pino, one object per line on stdout: `{"level":"info","ts":…,"msg":…,…}`.
 * The message goes first in the merge object so log lines read (and grep) as `"msg":"listening",…`.
 *
 * Info lines are gathered and written to stdout together, at most 50 ms late: at thousands of requests per
 * second a write per line (a system call each, several µs on a virtual machine) costs more than the rest of
 * the request, and pino's asynchronous destination hands each write to a libuv worker thread, a switch of
 * threads that costs more still on a loaded core. On Linux stdout is written synchronously when it is a pipe
 * or a file (node's rule), so a flushed line is out. `now()` and warn/error lines flush at once, and the rest
 * at exit, so a crash report or a test reading the port never misses them.
 *
 * Request lines (`request()`, one per HTTP request) are also serialised late, up to 256 at a time: pino's
 * code run once between two requests' worth of other code costs several times what it costs in a loop over
 * many lines (the line was ~25 % of a GET's CPU), so they wait, with the time of their event, for the next
 * line of another kind, for 256 of them, or 20 ms. Lines keep their order either way.
 *
 * A request line of the usual shape (REQUEST_LINE's keys, in its order, with values of its types) is
 * serialised by fast-json-stringify, Fastify's own serializer, compiled once from that shape: the same bytes
 * pino makes of it (log.test.ts compares the two) at half pino's cost, which was still ~7 points of the GET
 * by id's share of the bare server (docs/performance.md). None of its keys is a credential's; a line with any
 * other key or value goes through pino and its redaction.
 */
import fastJson from "fast-json-stringify";
import pino from "pino";

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Info line written before returning. */
  now(msg: string, fields?: Record<string, unknown>): void;
  /**
   * The info line of one HTTP request, `msg` first: serialised later (its fields must not change after
   * the call), stamped with the time of this call.
   */
  request(line: { msg: "request" } & Record<string, unknown>): void;
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

/** Info lines wait at most this long (or until 64 KiB are gathered) to be written, with every line since. */
const FLUSH_MS = 50;

/** A pino destination that gathers lines and writes them out together. */
function batched(out: (s: string) => void): { write(s: string): void; flushSync(): void } {
  let buf = "";
  let timer: NodeJS.Timeout | undefined;
  const flushSync = () => {
    clearTimeout(timer);
    timer = undefined;
    if (buf === "") return;
    const s = buf;
    buf = "";
    out(s);
  };
  return {
    write(s) {
      buf += s;
      if (buf.length > 65536) flushSync();
      else timer ??= setTimeout(flushSync, FLUSH_MS).unref();
    },
    flushSync,
  };
}

/** Request lines wait at most this long, or until this many, to be serialised. */
const REQUEST_LINES_MS = 20;
const REQUEST_LINES_MAX = 256;

/** `,"ts":"<ISO time>"`, made once per millisecond (a Date and its ISO text per line showed in profiles). */
let tsAt = 0;
let tsText = "";
/** The time of the request line being serialised (0: now). */
let eventAt = 0;
function timestamp(): string {
  const now = eventAt || Date.now();
  if (now !== tsAt) {
    tsAt = now;
    tsText = `,"ts":"${new Date(now).toISOString()}"`;
  }
  return tsText;
}

const errorFields = (v: unknown) => (v instanceof Error ? { message: v.message, stack: v.stack } : v);

/** The request line's usual keys, in the order http/server.ts writes them, and their JSON types. */
const REQUEST_LINE = {
  msg: "string",
  req_id: "string",
  method: "string",
  route: "string",
  path: "string",
  status: "integer",
  ms: "number",
  user_id: "string",
  aborted: "boolean",
  sandbox_id: "string",
  exit_code: "integer",
} as const;
type JsonType = (typeof REQUEST_LINE)[keyof typeof REQUEST_LINE];
const LINE_KEYS = Object.keys(REQUEST_LINE);
const LINE_TYPES: JsonType[] = Object.values(REQUEST_LINE);
const serializeLine = fastJson({
  type: "object",
  properties: Object.fromEntries(
    LINE_KEYS.map((k) => [k, { type: REQUEST_LINE[k as keyof typeof REQUEST_LINE] }]),
  ),
}) as (line: object) => string;

/** Whether a line has only REQUEST_LINE's keys, in its order, each undefined or of its type. */
function usualShape(line: Record<string, unknown>): boolean {
  let at = 0;
  for (const k in line) {
    // LINE_KEYS from `at` on: a key out of order is not found.
    while (at < LINE_KEYS.length && LINE_KEYS[at] !== k) at++;
    if (at === LINE_KEYS.length || !Object.hasOwn(line, k)) return false;
    const v = line[k];
    if (v === undefined) continue;
    const type = LINE_TYPES[at];
    if (
      type === "string"
        ? typeof v !== "string"
        : type === "boolean"
          ? typeof v !== "boolean"
          : type === "integer"
            ? !Number.isInteger(v)
            : !Number.isFinite(v)
    )
      return false;
  }
  return true;
}

/** `compiled: false` sends every request line through pino (the tests compare the two). */
export function createLogger(write?: (s: string) => void, opts: { compiled?: boolean } = {}): Logger {
  const compiled = opts.compiled ?? true;
  // A reader of stdout that went away (EPIPE) must not take the server down with it.
  if (!write) process.stdout.on("error", () => undefined);
  const dest = write ? { write } : batched((s) => process.stdout.write(s));
  const p = pino(
    {
      base: null,
      formatters: { level: (label) => ({ level: label }) },
      timestamp,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      serializers: { err: errorFields, error: errorFields },
    },
    dest,
  );
  // Request lines not serialised yet: (time, line) pairs.
  const pending: unknown[] = [];
  let pendingTimer: NodeJS.Timeout | undefined;
  const drain = () => {
    clearTimeout(pendingTimer);
    pendingTimer = undefined;
    for (let i = 0; i < pending.length; i += 2) {
      eventAt = pending[i] as number;
      const l = pending[i + 1] as Record<string, unknown>;
      if (compiled && usualShape(l))
        dest.write(`{"level":"info"${timestamp()},${serializeLine(l).slice(1)}\n`);
      else p.info(l);
    }
    eventAt = 0;
    pending.length = 0;
  };
  const flush = () => {
    drain();
    if ("flushSync" in dest) dest.flushSync();
  };
  // At exit: request lines still waiting, then everything the destination holds.
  if (!write) process.once("exit", flush);
  const line = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => {
    if (pending.length > 0) drain();
    p[level]({ msg, ...fields });
  };
  const synced = (level: "info" | "warn" | "error") => (m: string, f?: Record<string, unknown>) => {
    line(level, m, f);
    flush();
  };
  return {
    info: (m, f) => line("info", m, f),
    warn: synced("warn"),
    error: synced("error"),
    now: synced("info"),
    request: (l) => {
      pending.push(Date.now(), l);
      if (pending.length >= 2 * REQUEST_LINES_MAX) drain();
      else pendingTimer ??= setTimeout(drain, REQUEST_LINES_MS).unref();
    },
    flush,
  };
}
