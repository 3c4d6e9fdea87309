/** Static build for /console: hashed files under dist/assets, no inline script, nothing fetched at run time. */
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The SDK's shell()/tunnel() import node:net and node:tls; a page never calls them (it has shell-ws).
const stub = fileURLToPath(new URL("./src/node-stub.ts", import.meta.url));

export default defineConfig({
  base: "/console/",
  resolve: { alias: { "node:net": stub, "node:tls": stub } },
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // The polyfill would be an inline script; every browser the console targets has modulepreload.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
});
