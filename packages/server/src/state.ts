/**
 * The sandbox state machine (protocol.md §2.0/§2.3), in one place.
 *
 * `NEXT` is the transition table every status change must respect; `plan()` decides what a user action
 * does from a given status: go (and to which transitional status), answer as a no-op (already there), wait
 * (fork from `pausing`), or refuse with 409. Callers apply the decision with a compare-and-set in the store,
 * so the table is enforced even when requests race.
 */
import type { SandboxStatus } from "./store/types.js";

export const NEXT: Record<SandboxStatus, readonly SandboxStatus[]> = {
  creating: ["running", "failed", "destroying"],
  running: ["pausing", "destroying", "error"],
  pausing: ["paused", "running", "error", "destroying"],
  paused: ["resuming", "destroying", "error"],
  resuming: ["running", "paused", "error", "destroying"],
  forking: ["running", "paused", "failed", "destroying"],
  // Reconcile may find the VM or the snapshot after all.
  error: ["resuming", "running", "paused", "destroying"],
  destroying: ["destroyed"],
  destroyed: [],
  failed: ["destroyed"],
};

export const TERMINAL: readonly SandboxStatus[] = ["destroyed", "failed"];
export const TRANSITIONAL: readonly SandboxStatus[] = [
  "creating",
  "pausing",
  "resuming",
  "forking",
  "destroying",
];
/** States that hold (or are about to hold) a VM; counted against the running limit. */
export const LIVE: readonly SandboxStatus[] = ["creating", "running", "resuming", "forking", "pausing"];

/** States that hold host resources (a VM, a disk, a snapshot); counted against the per-tenant limits. */
export const HELD: readonly SandboxStatus[] = (Object.keys(NEXT) as SandboxStatus[]).filter(
  (s) => !TERMINAL.includes(s),
);

export type Action = "pause" | "resume" | "fork" | "destroy" | "runtime";

export type Plan =
  | { kind: "go"; from: SandboxStatus[]; to: SandboxStatus }
  | { kind: "noop" }
  | { kind: "wait" }
  | { kind: "conflict" };

export function plan(action: Action, status: SandboxStatus): Plan {
  switch (action) {
    case "pause":
      if (status === "running") return { kind: "go", from: ["running"], to: "pausing" };
      return status === "paused" ? { kind: "noop" } : { kind: "conflict" };
    case "resume":
      if (status === "paused" || status === "error")
        return { kind: "go", from: ["paused", "error"], to: "resuming" };
      return status === "running" ? { kind: "noop" } : { kind: "conflict" };
    case "fork":
      // The parent keeps its status; `to` names the child's first status.
      if (status === "paused") return { kind: "go", from: ["paused"], to: "forking" };
      return status === "pausing" ? { kind: "wait" } : { kind: "conflict" };
    case "destroy":
      if (status === "destroyed" || status === "destroying") return { kind: "noop" };
      if (status === "failed") return { kind: "go", from: ["failed"], to: "destroyed" };
      return {
        kind: "go",
        from: ["creating", "running", "pausing", "paused", "resuming", "forking", "error"],
        to: "destroying",
      };
    case "runtime":
      return status === "running" ? { kind: "noop" } : { kind: "conflict" };
  }
}

export function canTransition(from: SandboxStatus, to: SandboxStatus): boolean {
  return NEXT[from].includes(to);
}

/** Statuses from which `to` may be entered, per the table. */
export function sourcesOf(to: SandboxStatus): SandboxStatus[] {
  return (Object.keys(NEXT) as SandboxStatus[]).filter((s) => NEXT[s].includes(to));
}
