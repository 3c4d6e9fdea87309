import { bool } from "../../framework/args.js";
import type { Command, Group } from "../../framework/command.js";
import { UsageError } from "../../framework/errors.js";
import type { Network, NetworkMember } from "../../lib/sdk.js";
import { relativeTime, renderKeyValues, renderTable } from "../../ui/table.js";
import { confirmOrYes, label, yesFlag } from "./common.js";

/** A network id as the server hands them out (`net-`, or `net_` in older docs). */
const NETWORK_ID = /^net[-_][0-9a-z]{26}$/i;

const memberNames = (members: NetworkMember[]) =>
  members
    .slice(0, 5)
    .map((m) => m.name ?? m.sandbox_id)
    .join(", ") + (members.length > 5 ? ", …" : "");

const create: Command = {
  kind: "command",
  name: "create",
  summary: "Create a private network",
  usage: "<name>",
  args: { min: 1, max: 1 },
  examples: ["createos sandbox network create my-net"],
  async run(ctx, { positionals }) {
    const api = await ctx.api();
    const net = await api.client.networks.create({ name: positionals[0] as string });
    ctx.out.result({ action: "network_created", ...net }, () =>
      ctx.out.success(`Created network ${net.name} (${net.id})`),
    );
    return 0;
  },
};

const ls: Command = {
  kind: "command",
  name: "ls",
  aliases: ["list"],
  summary: "List private networks",
  usage: "",
  args: { max: 0 },
  examples: ["createos sandbox network ls"],
  async run(ctx) {
    const api = await ctx.api();
    const nets = await api.client.networks.list();
    ctx.out.result(nets, () =>
      nets.length === 0
        ? "No networks. Create one with: createos sandbox network create my-net"
        : renderTable<Network>(
            [
              { header: "id", get: (n) => n.id },
              { header: "name", get: (n) => n.name },
              {
                header: "members",
                get: (n) => String(n.member_count ?? n.members?.length ?? 0),
                right: true,
              },
              { header: "created", get: (n) => relativeTime(n.created_at) },
            ],
            nets,
          ),
    );
    return 0;
  },
};

const get: Command = {
  kind: "command",
  name: "get",
  aliases: ["show"],
  summary: "Show a network and its members",
  usage: "<name|id>",
  args: { min: 1, max: 1 },
  examples: ["createos sandbox network get my-net"],
  async run(ctx, { positionals }) {
    const api = await ctx.api();
    const net = await api.client.networks.get(positionals[0] as string);
    ctx.out.result(net, () => {
      const head = renderKeyValues([
        ["ID", net.id],
        ["Name", net.name],
        ["Created", net.created_at],
      ]);
      const members = net.members ?? [];
      return members.length
        ? `${head}\n${renderTable(
            [
              { header: "sandbox", get: (m) => m.sandbox_id },
              { header: "name", get: (m) => m.name ?? "" },
              { header: "status", get: (m) => m.status },
              // absent until the host has put the membership in force
              { header: "ip", get: (m) => m.ip ?? "(pending)" },
            ],
            members,
          )}`
        : `${head}No members.`;
    });
    return 0;
  },
};

const attach: Command = {
  kind: "command",
  name: "attach",
  summary: "Attach a running sandbox to a network",
  usage: "<sandbox> <network>",
  args: { min: 2, max: 2 },
  completes: "sandbox",
  examples: ["createos sandbox network attach my-box my-net"],
  async run(ctx, { positionals }) {
    const [box, net] = positionals as [string, string];
    const sb = await (await ctx.api()).sandbox(box);
    await sb.attachNetwork(net);
    ctx.out.result({ action: "network_attached", id: sb.id, network: net }, () =>
      ctx.out.success(`Attached ${label(sb.data)} to ${net}`),
    );
    return 0;
  },
};

const detach: Command = {
  kind: "command",
  name: "detach",
  summary: "Detach a sandbox from a network",
  usage: "<sandbox> <network> [--yes]",
  flags: [yesFlag],
  args: { min: 2, max: 2 },
  completes: "sandbox",
  examples: ["createos sandbox network detach my-box my-net"],
  async run(ctx, { flags, positionals }) {
    const [box, netRef] = positionals as [string, string];
    const api = await ctx.api();
    const sb = await api.sandbox(box);
    if (!(await confirmOrYes(ctx, bool(flags, "yes"), `Detach ${label(sb.data)} from ${netRef}?`))) return 1;
    // The detach route takes the network id; resolve a name first (a name may start with "net" too).
    const net = NETWORK_ID.test(netRef) ? { id: netRef } : await api.client.networks.get(netRef);
    await sb.detachNetwork(net.id);
    ctx.out.result({ action: "network_detached", id: sb.id, network: net.id }, () =>
      ctx.out.success(`Detached ${label(sb.data)} from ${netRef}`),
    );
    return 0;
  },
};

const rm: Command = {
  kind: "command",
  name: "rm",
  aliases: ["delete"],
  summary: "Delete a network (with --yes its members are detached first)",
  usage: "<name|id> [--yes]",
  flags: [yesFlag],
  args: { min: 1, max: 1 },
  examples: ["createos sandbox network rm my-net", "createos sandbox network rm my-net --yes"],
  async run(ctx, { flags, positionals }) {
    const ref = positionals[0] as string;
    const api = await ctx.api();
    const net = await api.client.networks.get(ref);
    const members = net.members ?? [];
    const yes = bool(flags, "yes");
    if (members.length && !yes && !ctx.interactive) {
      // What to do, rather than only "pass --yes": the members are what stands in the way.
      throw new UsageError(
        `network ${net.name} has ${members.length} member(s) (${memberNames(members)}): pass --yes to detach ` +
          `them and delete it, or detach them (createos sandbox network detach <sandbox> ${net.name}) ` +
          "or destroy them first",
        ctx.commandPath,
      );
    }
    const question = members.length
      ? `Delete network ${net.name}? Its ${members.length} member(s) (${memberNames(members)}) are detached first.`
      : `Delete network ${net.name}?`;
    if (!(await confirmOrYes(ctx, yes, question))) return 1;
    for (const m of members) {
      const sb = await api.client.getSandbox(m.sandbox_id);
      await sb.detachNetwork(net.id);
    }
    await api.client.networks.delete(net.id);
    ctx.out.result({ action: "network_deleted", id: net.id, name: net.name }, () =>
      ctx.out.success(`Deleted network ${net.name}`),
    );
    return 0;
  },
};

export const networkGroup: Group = {
  kind: "group",
  name: "network",
  aliases: ["networks", "net"],
  summary: "Private networks: sandboxes on one network reach each other by name",
  children: [create, ls, get, attach, detach, rm],
  examples: [
    "createos sandbox network create my-net",
    "createos sandbox network ls",
    "createos sandbox network attach my-box my-net",
    "createos sandbox network detach my-box my-net",
    "createos sandbox network rm my-net",
  ],
};
