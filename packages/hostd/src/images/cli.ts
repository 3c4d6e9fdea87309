import { statSync } from "node:fs";
import type { Progress } from "@createos-sandbox/protocol";
import { catalog, ensureImage } from "./image.js";
import { fmtMiB } from "./util.js";

function line(name: string, p: Progress): string {
  const pct = p.fraction === undefined ? "" : ` ${Math.round(p.fraction * 100)}%`;
  return `[${name}] ${p.phase}${pct}${p.message ? ` ${p.message}` : ""}`;
}

/**
 * `createos-sandbox images build [name…]`: builds the named images (all of the catalog when none are
 * named) one after another, printing progress lines to stderr. Resolves with the process exit code.
 */
export async function buildImagesCli(names: string[]): Promise<number> {
  const todo = names.length > 0 ? names : catalog().map((c) => c.name);
  let failures = 0;
  for (const name of todo) {
    const t0 = Date.now();
    let last = "";
    try {
      const img = await ensureImage(name, (p) => {
        const l = line(name, p);
        // make and mmdebstrap repeat themselves; one line per change is enough
        if (l !== last) process.stderr.write(`${l}\n`);
        last = l;
      });
      const st = statSync(img.rootfs);
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      process.stderr.write(
        `[${name}] ready in ${secs} s: ${img.rootfs} (${fmtMiB(st.size)}, ${fmtMiB(st.blocks * 512)} on disk), kernel ${img.kernel}\n`,
      );
    } catch (e) {
      failures++;
      process.stderr.write(`[${name}] failed: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }
  return failures === 0 ? 0 : 1;
}
