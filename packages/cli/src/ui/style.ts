export interface Style {
  enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

export function makeStyle(enabled: boolean): Style {
  const wrap = (open: number, close: number) => (s: string) =>
    enabled ? `\x1b[${open}m${s}\x1b[${close}m` : s;
  return {
    enabled,
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
  };
}

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

export function visibleLength(s: string): number {
  return s.replace(ANSI, "").length;
}

export function statusColor(style: Style, status: string): string {
  switch (status) {
    case "running":
      return style.green(status);
    case "paused":
    case "pausing":
    case "resuming":
    case "forking":
    case "creating":
      return style.yellow(status);
    case "error":
    case "failed":
      return style.red(status);
    case "destroyed":
    case "destroying":
      return style.dim(status);
    default:
      return status;
  }
}
