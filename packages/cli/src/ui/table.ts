import { visibleLength } from "./style.js";

export interface Column<T> {
  header: string;
  get(row: T): string;
  /** Right-align (numbers). */
  right?: boolean;
}

/** A gh-style table: upper-case headers, two spaces between columns, no borders. */
export function renderTable<T>(columns: Column<T>[], rows: T[], header = true): string {
  const cells = rows.map((row) => columns.map((c) => c.get(row)));
  const widths = columns.map((c, i) =>
    Math.max(header ? c.header.length : 0, ...cells.map((r) => visibleLength(r[i] as string))),
  );
  const pad = (s: string, i: number) => {
    const w = widths[i] as number;
    const fill = " ".repeat(Math.max(0, w - visibleLength(s)));
    return columns[i]?.right ? fill + s : s + fill;
  };
  const lines: string[] = [];
  if (header)
    lines.push(
      columns
        .map((c, i) => pad(c.header.toUpperCase(), i))
        .join("  ")
        .trimEnd(),
    );
  for (const r of cells)
    lines.push(
      r
        .map((s, i) => pad(s, i))
        .join("  ")
        .trimEnd(),
    );
  return lines.join("\n") + "\n";
}

/** Aligned `key: value` lines for detail views (`get`). */
export function renderKeyValues(pairs: Array<[string, string | undefined]>): string {
  const shown = pairs.filter((p): p is [string, string] => p[1] !== undefined && p[1] !== "");
  const w = Math.max(0, ...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${(k + ":").padEnd(w + 1)}  ${v}`).join("\n") + "\n";
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const s = u === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0);
  return `${n < 0 ? "-" : ""}${s} ${units[u]}`;
}

export function formatMib(mib: number): string {
  return mib >= 1024 && mib % 1024 === 0
    ? `${mib / 1024} GiB`
    : mib >= 1024
      ? `${(mib / 1024).toFixed(1)} GiB`
      : `${mib} MiB`;
}

/** "3m ago" style relative times for list views; full timestamps stay in `get` and JSON. */
export function relativeTime(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  if (s < 0) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
