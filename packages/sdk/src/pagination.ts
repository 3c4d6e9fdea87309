/**
 * List walking shared by every `list*`/`iterate*` method. Pages are driven by the server's `total`
 * and the number of items actually returned — never the requested size, which the server clamps.
 * Also accepts the legacy shapes (bare array, `{<key>: [...]}`) which carry no total and are one page.
 */
import { CreateosSandboxError } from "./errors.js";

export const MAX_PAGE_SIZE = 500;

export interface ExtractedPage<T> {
  items: T[];
  total: number | undefined;
}

export function extractPage<T>(
  payload: unknown,
  legacyKey: string | undefined,
  path: string,
): ExtractedPage<T> {
  if (Array.isArray(payload)) return { items: payload as T[], total: undefined };
  if (payload && typeof payload === "object") {
    const obj = payload as Record<string, unknown>;
    if (Array.isArray(obj.data)) {
      const pagination = obj.pagination as { total?: unknown } | undefined;
      const total = typeof pagination?.total === "number" ? pagination.total : undefined;
      return { items: obj.data as T[], total };
    }
    if (legacyKey && Array.isArray(obj[legacyKey])) {
      return { items: obj[legacyKey] as T[], total: undefined };
    }
  }
  // An unknown shape must not be read as "no rows": fail loudly.
  const preview = typeof payload === "string" ? payload : JSON.stringify(payload);
  throw new CreateosSandboxError(
    `Unrecognized list payload shape from ${path}: ${String(preview).slice(0, 200)}`,
  );
}

export interface PaginateOptions {
  legacyKey?: string | undefined;
  /** Stop after this many items. */
  cap?: number | undefined;
  path: string;
}

/** Walks pages lazily; `fetchPage(limit, offset)` returns the unwrapped `data` of one list call. */
export async function* paginate<T>(
  fetchPage: (limit: number, offset: number) => Promise<unknown>,
  options: PaginateOptions,
): AsyncGenerator<T> {
  const { cap, legacyKey, path } = options;
  if (cap !== undefined && cap <= 0) return;
  const pageSize = cap !== undefined ? Math.min(cap, MAX_PAGE_SIZE) : MAX_PAGE_SIZE;
  let offset = 0;
  let yielded = 0;
  for (;;) {
    const { items, total } = extractPage<T>(await fetchPage(pageSize, offset), legacyKey, path);
    for (const item of items) {
      yield item;
      yielded++;
      if (cap !== undefined && yielded >= cap) return;
    }
    if (total === undefined || items.length === 0 || offset + items.length >= total) return;
    offset += items.length;
  }
}
