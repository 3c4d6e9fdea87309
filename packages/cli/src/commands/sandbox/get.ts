import type { Command } from "../../framework/command.js";
import { formatDuration } from "../../lib/duration.js";
import type { BandwidthView } from "../../lib/sdk.js";
import { statusColor } from "../../ui/style.js";
import { formatBytes, formatMib, renderKeyValues } from "../../ui/table.js";
import { ACTIVE_STATUSES, boxArg, ingressUrl } from "./common.js";

export function bandwidthLine(bw: BandwidthView): string {
  if (bw.quota_bytes < 0)
    return `${formatBytes(bw.used_bytes)} out (unmetered), ${formatBytes(bw.ingress_bytes)} in`;
  const pct = bw.quota_bytes > 0 ? Math.round((bw.used_bytes / bw.quota_bytes) * 100) : 0;
  return `${formatBytes(bw.used_bytes)} of ${formatBytes(bw.quota_bytes)} out (${pct}%${bw.capped ? ", capped" : ""}), ${formatBytes(bw.ingress_bytes)} in`;
}

export const getCommand: Command = {
  kind: "command",
  name: "get",
  aliases: ["show", "info"],
  summary: "Show a sandbox: status, size, IP, public URL, firewall, bandwidth, timestamps",
  usage: "<name|id>",
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox get my-box", "createos sandbox get sb-01k... --output json"],
  async run(ctx, { positionals }) {
    const sb = await boxArg(ctx, positionals[0], [...ACTIVE_STATUSES, "error"], "show");
    const v = sb.data;
    // Bandwidth is a separate resource; a server without it must not break `get`.
    const bandwidth = await sb.getBandwidth().catch(() => undefined);
    const doc = { ...v, ...(bandwidth ? { bandwidth } : {}) };
    ctx.out.result(doc, () => {
      const s = ctx.out.style;
      const url = ingressUrl(v);
      return renderKeyValues([
        ["ID", v.id],
        ["Name", v.name],
        ["Status", statusColor(s, v.status)],
        ["Shape", v.shape],
        ["Size", `${v.vcpu} vCPU, ${formatMib(v.mem_mib)} RAM, ${formatMib(v.disk_mib)} disk`],
        ["Image", v.rootfs],
        ["Region", v.region],
        ["IP", v.ip],
        ["Public URL", v.ingress_enabled ? (url ?? "enabled (URL pending)") : "off"],
        ["Firewall", v.egress?.length ? v.egress.join(", ") : "all outbound traffic allowed"],
        ["Bandwidth", bandwidth ? bandwidthLine(bandwidth) : undefined],
        [
          "Auto-pause",
          v.auto_pause_after_seconds ? `after ${formatDuration(v.auto_pause_after_seconds)} idle` : "off",
        ],
        ["Env vars", v.envs?.join(", ")],
        ["SSH keys", v.ssh_pubkeys?.length ? String(v.ssh_pubkeys.length) : undefined],
        ["Forked from", v.forked_from],
        ["Created", v.created_at],
        ["Running since", v.running_at],
        ["Paused at", v.paused_at],
        ["Last resumed", v.last_resumed_at],
        ["Destroyed at", v.destroyed_at],
        ["Boot time", v.spawn_ms !== undefined ? `${Math.round(v.spawn_ms)} ms` : undefined],
      ]);
    });
    return 0;
  },
};
