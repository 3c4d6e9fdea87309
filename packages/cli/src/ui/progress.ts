import { formatBytes } from "./table.js";

export interface Progress {
  add(bytes: number): void;
  done(): void;
}

/** A transfer bar on stderr: `label [#####-----]  45%  12.3 MiB/27.1 MiB  5.2 MiB/s`. */
export function startProgress(
  stream: NodeJS.WriteStream,
  label: string,
  total: number | undefined,
): Progress {
  const start = Date.now();
  let seen = 0;
  let lastDraw = 0;
  const draw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const rate = seen / Math.max(0.001, (now - start) / 1000);
    const width = 24;
    let line: string;
    if (total && total > 0) {
      const frac = Math.min(1, seen / total);
      const filled = Math.round(frac * width);
      line = `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}%  ${formatBytes(seen)}/${formatBytes(total)}  ${formatBytes(Math.round(rate))}/s`;
    } else {
      line = `${label} ${formatBytes(seen)}  ${formatBytes(Math.round(rate))}/s`;
    }
    stream.write(`\r\x1b[2K${line}`);
  };
  return {
    add(bytes: number) {
      seen += bytes;
      draw(false);
    },
    done() {
      draw(true);
      stream.write("\n");
    },
  };
}
