import { SANDBOX_STATUSES } from "@createos-sandbox/protocol/api";
import { bool, int, str } from "../../framework/args.js";
import type { Command } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import type { Api, Page } from "../../lib/api.js";
import { formatDuration } from "../../lib/duration.js";
import type { SandboxView } from "../../lib/sdk.js";
import { statusColor } from "../../ui/style.js";
import { type Column, formatMib, relativeTime, renderTable } from "../../ui/table.js";
import { ACTIVE_STATUSES } from "./common.js";

async function fetchPage(
  api: Api,
  query: Record<string, string | number | undefined>,
): Promise<SandboxView[]> {
  const page = await api.client.http.request<
    Page<SandboxView> | SandboxView[] | { sandboxes: SandboxView[] }
  >("GET", "/v1/sandboxes", { query });
  if (Array.isArray(page)) return page;
  if ("data" in page && Array.isArray(page.data)) return page.data;
  if ("sandboxes" in page && Array.isArray(page.sandboxes)) return page.sandboxes;
  return [];
}

const byNewest = (a: SandboxView, b: SandboxView) => Date.parse(b.created_at) - Date.parse(a.created_at);

export const listCommand: Command = {
  kind: "command",
  name: "list",
  aliases: ["ls"],
  summary: "List sandboxes",
  usage: "[--all | --status <status>] [--quiet] [--limit <n>] [--offset <n>] [--wide]",
  description:
    "Without --all or --status only active sandboxes are listed (running, paused and in-between states).",
  flags: [
    { name: "all", short: "a", type: "boolean", description: "Include every status (also destroyed)" },
    {
      name: "status",
      type: "string",
      value: "<status>",
      choices: SANDBOX_STATUSES,
      description: "Only this status",
    },
    { name: "quiet", short: "q", type: "boolean", description: "IDs only, one per line" },
    { name: "limit", type: "string", value: "<n>", description: "At most n sandboxes (default 50, max 500)" },
    { name: "offset", type: "string", value: "<n>", description: "Skip the first n sandboxes" },
    { name: "wide", short: "w", type: "boolean", description: "More columns" },
  ],
  args: { max: 0 },
  examples: [
    "createos sandbox list",
    "createos sandbox list --all",
    "createos sandbox list --status paused",
    "createos sandbox list --quiet              # IDs only — useful for scripting",
    "createos sandbox list --output json | jq '.[].id'",
  ],
  async run(ctx, { flags }) {
    const cp = ctx.commandPath;
    const limit = int(flags, "limit", cp, 1, 500) ?? 50;
    const offset = int(flags, "offset", cp, 0) ?? 0;
    const status = str(flags, "status");
    if (status && bool(flags, "all")) throw new UsageError("--all and --status cannot be combined", cp);
    const api = await ctx.api();
    let rows: SandboxView[];
    if (status || bool(flags, "all")) {
      rows = await fetchPage(api, { limit, offset, status });
    } else {
      // The API filters by one status at a time, so the active view merges one request per status.
      const pages = await Promise.all(
        ACTIVE_STATUSES.map((s) => fetchPage(api, { status: s, limit: offset + limit, offset: 0 })),
      );
      rows = pages
        .flat()
        .sort(byNewest)
        .slice(offset, offset + limit);
    }
    if (bool(flags, "quiet")) {
      if (rows.length) ctx.streams.stdout.write(rows.map((r) => r.id).join("\n") + "\n");
      return 0;
    }
    ctx.out.result(rows, () => {
      if (rows.length === 0) {
        return status || bool(flags, "all")
          ? "No sandboxes found."
          : "No active sandboxes. Create one with: createos sandbox create --shape s-1vcpu-256mb";
      }
      const s = ctx.out.style;
      const cols: Column<SandboxView>[] = [
        { header: "id", get: (r) => r.id },
        { header: "name", get: (r) => r.name ?? "" },
        { header: "status", get: (r) => statusColor(s, r.status) },
        { header: "shape", get: (r) => r.shape ?? `${r.vcpu}c/${r.mem_mib}m` },
        { header: "ip", get: (r) => r.ip ?? "" },
        { header: "created", get: (r) => relativeTime(r.created_at) },
      ];
      if (bool(flags, "wide")) {
        cols.push(
          { header: "image", get: (r) => r.rootfs ?? "" },
          { header: "disk", get: (r) => formatMib(r.disk_mib), right: true },
          { header: "ingress", get: (r) => (r.ingress_enabled ? "on" : "off") },
          {
            header: "auto-pause",
            get: (r) => (r.auto_pause_after_seconds ? formatDuration(r.auto_pause_after_seconds) : "off"),
          },
          { header: "forked from", get: (r) => r.forked_from ?? "" },
        );
      }
      return renderTable(cols, rows);
    });
    return 0;
  },
};
