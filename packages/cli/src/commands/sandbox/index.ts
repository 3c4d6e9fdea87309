import type { Group } from "../../framework/command.js";
import { rootfsCommand, shapesCommand } from "./catalog.js";
import { createCommand } from "./create.js";
import { diskGroup } from "./disk.js";
import { editCommand } from "./edit.js";
import { execCommand } from "./exec.js";
import { pullCommand, pushCommand } from "./files.js";
import { firewallGroup } from "./firewall.js";
import { getCommand } from "./get.js";
import { forkCommand, pauseCommand, resumeCommand } from "./lifecycle.js";
import { listCommand } from "./list.js";
import { networkGroup } from "./network.js";
import { rmCommand } from "./rm.js";
import { shellCommand } from "./shell.js";
import { syncCommand } from "./sync.js";
import { templateGroup } from "./template.js";
import { tunnelCommand } from "./tunnel.js";

export const sandboxGroup: Group = {
  kind: "group",
  name: "sandbox",
  aliases: ["sb", "sandboxes"],
  summary: "Create, run, and manage isolated sandboxes",
  description:
    "Sandboxes are microVMs: spin one up in seconds, run commands, sync files, open shells, and tear\n" +
    "down when you're done. A sandbox is named by its ID (sb-…) or its name everywhere.\n" +
    "Run `createos sandbox create` with no flags on a terminal for an interactive setup wizard.",
  children: [
    createCommand,
    listCommand,
    getCommand,
    editCommand,
    pauseCommand,
    resumeCommand,
    forkCommand,
    rmCommand,
    execCommand,
    shellCommand,
    pushCommand,
    pullCommand,
    syncCommand,
    tunnelCommand,
    firewallGroup,
    networkGroup,
    diskGroup,
    templateGroup,
    shapesCommand,
    rootfsCommand,
  ],
  examples: [
    "createos login",
    "createos sandbox shapes",
    "createos sandbox create --shape s-1vcpu-256mb --name my-box",
    "createos sandbox exec my-box -- uname -a",
    "createos sandbox shell my-box",
    "createos sandbox list --output json | jq '.[].id'",
    "createos sandbox rm my-box --force",
  ],
};
