import { bool } from "../../framework/args.js";
import type { Command, Group } from "../../framework/command.js";
import { boxArg, label, yesFlag } from "./common.js";
import { bandwidthLine } from "./get.js";

const ANY = ["running", "paused", "pausing", "resuming", "creating", "forking", "error"] as const;

function rulesText(rules: string[]): string {
  return rules.length === 0 || (rules.length === 1 && rules[0] === "*")
    ? "No rules: all outbound traffic is allowed."
    : `Outbound traffic allowed only to:\n${rules.map((r) => `  ${r}`).join("\n")}`;
}

const show: Command = {
  kind: "command",
  name: "show",
  aliases: ["get", "ls"],
  summary: "Show a sandbox's outbound allowlist",
  usage: "<name|id>",
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox firewall show my-box"],
  async run(ctx, { positionals }) {
    const sb = await boxArg(ctx, positionals[0], [...ANY], "show the firewall of");
    const view = await sb.getEgress();
    // Usage, quota and capped next to the rules; a server without bandwidth must not break `show`.
    const bandwidth = await sb.getBandwidth().catch(() => undefined);
    const doc = { ...view, ...(bandwidth ? { bandwidth } : {}) };
    ctx.out.result(doc, () =>
      bandwidth
        ? `${rulesText(view.egress)}\nBandwidth: ${bandwidthLine(bandwidth)}`
        : rulesText(view.egress),
    );
    return 0;
  },
};

const set: Command = {
  kind: "command",
  name: "set",
  summary: "Replace the outbound allowlist (anything else is blocked)",
  usage: "<name|id> <rule>...",
  description:
    "Rules: host, host:port, *.host, ip, ip:port, cidr, cidr:port, or * (allow all). Applied live.",
  args: { min: 2 },
  completes: "sandbox",
  examples: [
    "createos sandbox firewall set my-box pypi.org github.com",
    "createos sandbox firewall set my-box 10.0.0.0/8:5432",
  ],
  async run(ctx, { positionals }) {
    const [ref, ...rules] = positionals as [string, ...string[]];
    const sb = await boxArg(ctx, ref, [...ANY], "set the firewall of");
    const view = await sb.setEgress(rules);
    ctx.out.result(
      { action: "egress_updated", ...view },
      () => `${ctx.out.success(`Firewall of ${label(sb.data)} updated`)}\n${rulesText(view.egress)}`,
    );
    return 0;
  },
};

const clear: Command = {
  kind: "command",
  name: "clear",
  summary: "Remove every rule (allow all outbound traffic)",
  usage: "<name|id> [--yes]",
  flags: [yesFlag],
  args: { max: 1 },
  completes: "sandbox",
  examples: ["createos sandbox firewall clear my-box", "createos sandbox firewall clear my-box --yes"],
  async run(ctx, { flags, positionals }) {
    const sb = await boxArg(ctx, positionals[0], [...ANY], "clear the firewall of");
    // Asked on a terminal only: in a script (the docs' `firewall clear my-box`) it just clears, since
    // nothing is lost that `firewall set` cannot put back.
    const question = `Allow all outbound traffic from ${label(sb.data)}?`;
    if (ctx.interactive && !bool(flags, "yes") && !(await ctx.prompt.confirm(question))) return 1;
    const view = await sb.setEgress([]);
    ctx.out.result({ action: "egress_cleared", ...view }, () =>
      ctx.out.success(`Firewall of ${label(sb.data)} cleared: all outbound traffic allowed`),
    );
    return 0;
  },
};

export const firewallGroup: Group = {
  kind: "group",
  name: "firewall",
  aliases: ["egress"],
  summary: "Control a sandbox's outbound internet access",
  description: "When no rules are set, all outbound traffic is allowed.",
  children: [show, set, clear],
  examples: [
    "createos sandbox firewall show my-box",
    "createos sandbox firewall set my-box pypi.org github.com",
    "createos sandbox firewall clear my-box",
  ],
};
