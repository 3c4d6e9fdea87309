/**
 * The web console's static files (packages/console, built by Vite into its dist/) at `/console`. Read from
 * disk on each request — a rebuild shows at once — but only names the build listed: no path from the URL
 * ever reaches the file system.
 */
import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, extname, join } from "node:path";
import { apiError } from "@createos-sandbox/protocol";
import type { Ctx, Route } from "../http/server.js";
import { route } from "./common.js";

/**
 * No inline or foreign script, no request to anything but this server (WebSockets included: CSP 3's 'self'
 * matches ws: and wss: of the same host). Styles allow 'unsafe-inline' only because xterm.js sizes its
 * terminal grid with <style> elements it writes at run time.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
};

/** packages/console/dist, found through the workspace package so an installed tree works as well. */
export function consoleDistDir(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve("@createos-sandbox/console/package.json");
    return join(dirname(pkg), "dist");
  } catch {
    return undefined;
  }
}

async function listFiles(dir: string): Promise<Set<string>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const out = new Set<string>();
  for (const e of entries) {
    if (!e.isFile()) continue;
    // `parentPath` from Node 20.12; `path` before (engines says ≥ 20.10).
    const parent = e.parentPath ?? (e as { path?: string }).path ?? dir;
    const rel = join(parent, e.name).slice(dir.length + 1);
    if (TYPES[extname(rel)]) out.add(rel.split("\\").join("/"));
  }
  return out;
}

export function consoleRoutes(distDir = consoleDistDir()): Route[] {
  const serve = async (ctx: Ctx, rel: string) => {
    const files = distDir ? await listFiles(distDir).catch(() => new Set<string>()) : new Set<string>();
    if (!files.has("index.html")) throw apiError("console_not_built");
    if (!files.has(rel))
      throw apiError("route_not_found", { method: ctx.req.method, path: `/console/${rel}` });
    const body = await readFile(join(distDir!, rel));
    ctx.reply
      .code(200)
      .headers({
        "content-type": TYPES[extname(rel)]!,
        "content-security-policy": CONSOLE_CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        // Vite names every asset by its hash; only the page itself must be fetched again.
        "cache-control": rel.startsWith("assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      })
      .send(body);
    return undefined;
  };
  return [
    route("GET /console", { auth: "none", body: "none" }, (ctx) => serve(ctx, "index.html")),
    route("GET /console/*", { auth: "none", body: "none" }, (ctx) =>
      serve(ctx, ctx.params["*"] === "" ? "index.html" : (ctx.params["*"] ?? "")),
    ),
  ];
}
