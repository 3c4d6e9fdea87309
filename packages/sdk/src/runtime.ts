export type Runtime =
  | "node"
  | "bun"
  | "deno"
  | "workerd"
  | "edge-light"
  | "browser"
  | "react-native"
  | "unknown";

interface RuntimeGlobals {
  Bun?: { version?: string };
  Deno?: { version?: { deno?: string } };
  process?: { versions?: { node?: string }; env?: Record<string, string | undefined> };
  WebSocketPair?: unknown;
  navigator?: { product?: string };
  window?: unknown;
  document?: unknown;
}

const g = (): RuntimeGlobals => globalThis as unknown as RuntimeGlobals;

/** Never throws: every probe is a typeof/optional check. */
export function detectRuntime(): Runtime {
  const G = g();
  if (G.Bun?.version) return "bun";
  if (G.Deno?.version?.deno) return "deno";
  if (G.process?.env?.NEXT_RUNTIME === "edge") return "edge-light";
  if (typeof G.WebSocketPair !== "undefined") return "workerd";
  if (G.navigator?.product === "ReactNative") return "react-native";
  if (G.process?.versions?.node) return "node";
  if (typeof G.window !== "undefined" && typeof G.document !== "undefined") return "browser";
  return "unknown";
}

/** e.g. `node-20.11.0`. */
export function runtimeTag(): string {
  const r = detectRuntime();
  const G = g();
  if (r === "node") return `node-${G.process?.versions?.node ?? "unknown"}`;
  if (r === "bun") return `bun-${G.Bun?.version ?? "unknown"}`;
  if (r === "deno") return `deno-${G.Deno?.version?.deno ?? "unknown"}`;
  return r;
}
