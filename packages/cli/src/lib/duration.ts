/**
 * Go-style durations (`90s`, `10m`, `1h30m`, `1.5h`) to whole seconds. Returns undefined when the
 * text is not a duration, so callers can word the error for their flag.
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === "") return undefined;
  if (/^\d+$/.test(s)) return Number(s); // bare numbers are seconds, like the server field
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    const n = Number(m[1]);
    const unit = m[2];
    total += unit === "h" ? n * 3600 : unit === "m" ? n * 60 : unit === "s" ? n : n / 1000;
    consumed = re.lastIndex;
  }
  if (consumed !== s.length || consumed === 0) return undefined;
  return Math.round(total);
}

export const AUTO_PAUSE_MIN = 60;
export const AUTO_PAUSE_MAX = 86400;
const OFF_WORDS = new Set(["off", "disable", "disabled", "false", "no", "none", "0"]);

export type AutoPause = { kind: "off" } | { kind: "seconds"; seconds: number };

/** `--auto-pause` values: a duration in 60s–24h, or off/disable/false/no. */
export function parseAutoPause(text: string): AutoPause | string {
  if (OFF_WORDS.has(text.trim().toLowerCase())) return { kind: "off" };
  const secs = parseDuration(text);
  if (secs === undefined) return `invalid duration "${text}" (examples: 90s, 10m, 1h30m, off)`;
  if (secs < AUTO_PAUSE_MIN || secs > AUTO_PAUSE_MAX) {
    return `auto-pause must be between 1m and 24h (60–86400 s), got ${secs}s`;
  }
  return { kind: "seconds", seconds: secs };
}

export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return [h ? `${h}h` : "", m ? `${m}m` : "", s || (!h && !m) ? `${s}s` : ""].join("");
}
