import { readFileSync } from "node:fs";
import type { Command } from "../framework/command.js";

export function cliVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}

export const versionCommand: Command = {
  kind: "command",
  name: "version",
  summary: "Print the CLI version",
  usage: "",
  args: { max: 0 },
  examples: ["createos version"],
  async run(ctx) {
    const version = cliVersion();
    ctx.out.result({ version }, () => `createos ${version}`);
    return 0;
  },
};
