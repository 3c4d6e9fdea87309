/**
 * NDJSON reader tolerant in the ways protocol.md §3.1 asks: blank and malformed lines are skipped,
 * SSE framing (`data:` payloads; `event:`/`id:`/`retry:` and `:` comment lines) is accepted, and lines
 * up to 4 MiB are parsed while longer ones are dropped without buffering them whole.
 */

export const NDJSON_MAX_LINE_BYTES = 4 * 1024 * 1024;

const NEWLINE = 0x0a;
const SSE_CONTROL = ["event:", "id:", "retry:"];

/** Parses one line; undefined for blank, control, malformed or non-object lines. */
export function parseNdjsonLine(rawLine: string): Record<string, unknown> | undefined {
  const line = rawLine.trim();
  if (line === "" || line.startsWith(":")) return undefined;
  if (SSE_CONTROL.some((p) => line.startsWith(p))) return undefined;
  const payload = line.startsWith("data:") ? line.slice(5).trim() : line;
  if (payload === "") return undefined;
  try {
    const value: unknown = JSON.parse(payload);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Incremental splitter: feed byte chunks in any split, get back the frames completed so far.
 * Works on bytes so a multi-byte UTF-8 character split across chunks decodes correctly and the
 * length limit is in bytes.
 */
export class NdjsonParser {
  readonly #maxLineBytes: number;
  readonly #decoder = new TextDecoder();
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Set while skipping the rest of an oversize line. */
  #discarding = false;
  /** Lines dropped for exceeding the limit (observable for tests and diagnostics). */
  oversizeLines = 0;

  constructor(maxLineBytes: number = NDJSON_MAX_LINE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  push(chunk: Uint8Array): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.#discarding) {
        const piece = chunk.subarray(start, end);
        if (this.#pendingBytes + piece.length > this.#maxLineBytes) {
          this.#discarding = true;
          this.oversizeLines++;
          this.#pending = [];
          this.#pendingBytes = 0;
        } else if (piece.length > 0) {
          // Copy: the caller may reuse the chunk's buffer.
          this.#pending.push(piece.slice());
          this.#pendingBytes += piece.length;
        }
      }
      if (nl === -1) break;
      if (this.#discarding) this.#discarding = false;
      else this.#emit(out);
      start = nl + 1;
    }
    return out;
  }

  /** Flushes a final line that had no trailing newline. */
  end(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    if (!this.#discarding) this.#emit(out);
    this.#discarding = false;
    return out;
  }

  #emit(out: Record<string, unknown>[]): void {
    if (this.#pendingBytes === 0) {
      this.#pending = [];
      return;
    }
    const bytes = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    this.#pending = [];
    this.#pendingBytes = 0;
    const frame = parseNdjsonLine(this.#decoder.decode(bytes));
    if (frame !== undefined) out.push(frame);
  }
}

/**
 * Yields frames from a response body. Stopping early (break/throw in the consumer) cancels the
 * body, which closes the connection so the server stops the command.
 */
export async function* readNdjson<T>(
  body: ReadableStream<Uint8Array>,
  maxLineBytes: number = NDJSON_MAX_LINE_BYTES,
): AsyncGenerator<T> {
  const reader = body.getReader();
  const parser = new NdjsonParser(maxLineBytes);
  let drained = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const frame of parser.push(value)) yield frame as T;
    }
    for (const frame of parser.end()) yield frame as T;
    drained = true;
  } finally {
    if (drained) reader.releaseLock();
    else await reader.cancel().catch(() => undefined);
  }
}
