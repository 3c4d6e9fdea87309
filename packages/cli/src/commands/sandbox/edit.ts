import { list, str } from "../../framework/args.js";
import type { Command, Context } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import { type AutoPause, formatDuration, parseAutoPause } from "../../lib/duration.js";
import type { Sandbox } from "../../lib/sdk.js";
import { ACTIVE_STATUSES, boxArg, ingressUrl, label, onOff, readPublicKey } from "./common.js";

type Change =
  | { kind: "ingress"; enabled: boolean }
  | { kind: "keys"; keys: string[] }
  | { kind: "auto-pause"; value: AutoPause }
  | { kind: "bandwidth"; addBytes: number };

async function menu(ctx: Context, sb: Sandbox): Promise<Change[]> {
  const v = sb.data;
  const choice = await ctx.prompt.select(`Edit ${label(v)}`, [
    { label: `${v.ingress_enabled ? "Disable" : "Enable"} public URL (ingress)`, value: "ingress" },
    { label: "Add an SSH public key", value: "keys" },
    {
      label: "Set auto-pause",
      value: "auto-pause",
      hint: v.auto_pause_after_seconds ? `now ${formatDuration(v.auto_pause_after_seconds)}` : "now off",
    },
    { label: "Top up bandwidth", value: "bandwidth" },
    { label: "Cancel", value: "cancel" },
  ]);
  switch (choice) {
    case "ingress":
      return [{ kind: "ingress", enabled: !v.ingress_enabled }];
    case "keys": {
      const file = await ctx.prompt.text("Public key file", {
        default: "~/.ssh/id_ed25519.pub",
      });
      return [{ kind: "keys", keys: [readPublicKey(file, ctx.env, ctx.commandPath)] }];
    }
    case "auto-pause": {
      const text = await ctx.prompt.text("Auto-pause after (e.g. 10m, 1h, off)", {
        validate: (t) => {
          const r = parseAutoPause(t);
          return typeof r === "string" ? r : undefined;
        },
      });
      return [{ kind: "auto-pause", value: parseAutoPause(text) as AutoPause }];
    }
    case "bandwidth": {
      const gib = await ctx.prompt.text("GiB to add", {
        validate: (t) => (/^\d+$/.test(t) && Number(t) > 0 ? undefined : "a whole number of GiB"),
      });
      return [{ kind: "bandwidth", addBytes: Number(gib) * 1024 ** 3 }];
    }
    default:
      return [];
  }
}

export const editCommand: Command = {
  kind: "command",
  name: "edit",
  summary: "Change a sandbox's ingress, SSH keys or auto-pause",
  usage: "<name|id> [--ingress on|off] [--add-ssh-key <path>] [--auto-pause <duration>|off]",
  description: "Without flags on a terminal, a menu offers the same changes plus a bandwidth top-up.",
  flags: [
    { name: "ingress", type: "string", value: "on|off", description: "Public HTTPS URL for HTTP services" },
    {
      name: "add-ssh-key",
      type: "string",
      multiple: true,
      value: "<path>",
      description: "Authorise an SSH public key",
    },
    {
      name: "auto-pause",
      type: "string",
      value: "<duration>|off",
      description: "Pause after this long idle (1m–24h)",
    },
    {
      name: "add-bandwidth-gib",
      type: "string",
      value: "<n>",
      description: "Top up the egress quota by n GiB",
    },
  ],
  args: { max: 1 },
  completes: "sandbox",
  examples: [
    "createos sandbox edit my-box --ingress on",
    "createos sandbox edit my-box --add-ssh-key ~/.ssh/id_ed25519.pub",
    "createos sandbox edit my-box --auto-pause 30m",
    "createos sandbox edit my-box --auto-pause off",
    "createos sandbox edit my-box          # interactive menu",
  ],
  async run(ctx, { flags, positionals }) {
    const cp = ctx.commandPath;
    const changes: Change[] = [];
    const ingress = str(flags, "ingress");
    if (ingress !== undefined) changes.push({ kind: "ingress", enabled: onOff(ingress, "ingress", cp) });
    const keys = list(flags, "add-ssh-key").map((k) => readPublicKey(k, ctx.env, cp));
    if (keys.length) changes.push({ kind: "keys", keys });
    const ap = str(flags, "auto-pause");
    if (ap !== undefined) {
      const parsed = parseAutoPause(ap);
      if (typeof parsed === "string") throw new UsageError(parsed, cp);
      changes.push({ kind: "auto-pause", value: parsed });
    }
    const gib = str(flags, "add-bandwidth-gib");
    if (gib !== undefined) {
      if (!/^\d+$/.test(gib) || Number(gib) === 0)
        throw new UsageError("--add-bandwidth-gib wants a positive whole number", cp);
      changes.push({ kind: "bandwidth", addBytes: Number(gib) * 1024 ** 3 });
    }
    if (changes.length === 0 && !ctx.interactive) {
      throw new UsageError(
        "nothing to change: pass --ingress, --add-ssh-key, --auto-pause or --add-bandwidth-gib",
        cp,
      );
    }
    const sb = await boxArg(ctx, positionals[0], ACTIVE_STATUSES, "edit");
    if (changes.length === 0) changes.push(...(await menu(ctx, sb)));
    if (changes.length === 0) return 0;

    const docs: Record<string, unknown>[] = [];
    const lines: string[] = [];
    for (const c of changes) {
      switch (c.kind) {
        case "ingress": {
          await sb.setIngress(c.enabled);
          const url = ingressUrl(sb.data);
          docs.push({
            action: "ingress_updated",
            id: sb.id,
            ingress_enabled: sb.data.ingress_enabled,
            ingress_url: url,
          });
          lines.push(ctx.out.success(`Ingress ${c.enabled ? `on${url ? `: ${url}` : ""}` : "off"}`));
          break;
        }
        case "keys": {
          const { count } = await sb.addSSHPubkeys(c.keys);
          docs.push({ action: "ssh_keys_added", id: sb.id, added: c.keys.length, count });
          lines.push(
            ctx.out.success(
              `Added ${c.keys.length} SSH key${c.keys.length === 1 ? "" : "s"} (${count} in total)`,
            ),
          );
          break;
        }
        case "auto-pause": {
          await sb.setAutoPause(c.value.kind === "off" ? null : c.value.seconds);
          const secs = sb.data.auto_pause_after_seconds;
          docs.push({ action: "auto_pause_updated", id: sb.id, auto_pause_after_seconds: secs ?? null });
          lines.push(
            ctx.out.success(secs ? `Auto-pause after ${formatDuration(secs)} idle` : "Auto-pause off"),
          );
          break;
        }
        case "bandwidth": {
          const bw = await sb.rechargeBandwidth(c.addBytes);
          docs.push({ action: "bandwidth_recharged", id: sb.id, bandwidth: bw });
          lines.push(ctx.out.success(`Bandwidth topped up by ${c.addBytes / 1024 ** 3} GiB`));
          break;
        }
      }
    }
    ctx.out.result(docs.length === 1 ? docs[0] : { action: "updated", id: sb.id, changes: docs }, () =>
      lines.join("\n"),
    );
    return 0;
  },
};
