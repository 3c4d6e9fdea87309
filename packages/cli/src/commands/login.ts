import { bool, str } from "../framework/args.js";
import type { Command } from "../framework/command.js";
import { CliError, UsageError } from "../framework/errors.js";
import { connect } from "../lib/api.js";
import { clearLogin, configDir, maskKey, resolveCredentials, saveLogin } from "../lib/config.js";

function checkUrl(raw: string): string | undefined {
  try {
    const u = new URL(raw);
    if (u.protocol !== "http:" && u.protocol !== "https:")
      return "the server URL must start with http:// or https://";
    if (u.username || u.password || u.search || u.hash)
      return "the server URL must not carry credentials, a query or a fragment";
    return undefined;
  } catch {
    return `not a URL: "${raw}"`;
  }
}

export const loginCommand: Command = {
  kind: "command",
  name: "login",
  summary: "Store an API key (and server URL) for later commands",
  usage: "[--token <key>] [--url <url>]",
  description:
    "Saves the key in ~/.createos/.token and the server URL in ~/.createos/config.json (directory 0700,\n" +
    "files 0600). On a terminal without --token it asks for both. The key is checked against the\n" +
    "server (GET /v1/whoami) before it is saved unless --no-verify is given.",
  flags: [
    { name: "token", short: "t", type: "string", value: "<key>", description: "API key to store (skp_…)" },
    { name: "url", type: "string", value: "<url>", description: "Server URL to store (default: current)" },
    { name: "no-verify", type: "boolean", description: "Save without checking the key against the server" },
  ],
  args: { max: 0 },
  examples: [
    "createos login",
    "createos login --token skp_xxx --url http://127.0.0.1:8080",
    'echo "$KEY" | createos login --token -',
  ],
  async run(ctx, { flags }) {
    const current = resolveCredentials({ apiKey: undefined, apiUrl: ctx.globals.apiUrl }, ctx.env);
    let token = str(flags, "token");
    let url = str(flags, "url") ?? ctx.globals.apiUrl;
    if (token === "-") {
      const chunks: Buffer[] = [];
      for await (const c of ctx.streams.stdin) chunks.push(c as Buffer);
      token = Buffer.concat(chunks).toString("utf8").trim();
    }
    if (token === undefined) {
      if (!ctx.interactive) {
        throw new UsageError(
          "no API key given: pass --token <key> (or run on a terminal to be asked)",
          ctx.commandPath,
        );
      }
      token = await ctx.prompt.text("API key", {
        mask: true,
        validate: (v) => (v.trim() === "" ? "required" : undefined),
      });
      if (url === undefined) {
        url = await ctx.prompt.text("Server URL", { default: current.apiUrl, validate: checkUrl });
      }
    }
    token = token.trim();
    if (token === "") throw new UsageError("the API key is empty", ctx.commandPath);
    if (url !== undefined) {
      const problem = checkUrl(url);
      if (problem) throw new UsageError(problem, ctx.commandPath);
      url = url.replace(/\/+$/, "");
    }
    const apiUrl = url ?? current.apiUrl;
    let userId: string | undefined;
    if (!bool(flags, "no-verify")) {
      const api = await connect({ ...ctx.globals, apiKey: token, apiUrl }, ctx.env, () => {});
      try {
        userId = (await ctx.out.step("Checking the key", () => api.client.whoami())).user_id;
      } catch (err) {
        const status = (err as { statusCode?: number }).statusCode;
        if (status === 401)
          throw new CliError(`the server at ${apiUrl} rejected this API key`, "unauthorized");
        throw err;
      }
    }
    saveLogin(ctx.env, token, url ?? (ctx.globals.apiUrl ? apiUrl : undefined));
    ctx.out.result(
      {
        action: "logged_in",
        api_url: apiUrl,
        ...(userId ? { user_id: userId } : {}),
        config_dir: configDir(ctx.env),
      },
      () =>
        ctx.out.success(
          `Logged in to ${apiUrl}${userId ? ` as ${userId}` : ""} (key ${maskKey(token as string)} saved in ${configDir(ctx.env)})`,
        ),
    );
    return 0;
  },
};

export const logoutCommand: Command = {
  kind: "command",
  name: "logout",
  summary: "Forget the stored API key",
  usage: "",
  description: "Deletes ~/.createos/.token (and an OAuth session file, if any). The server URL is kept.",
  args: { max: 0 },
  examples: ["createos logout"],
  async run(ctx) {
    const removed = clearLogin(ctx.env);
    ctx.out.result({ action: "logged_out", removed }, () =>
      removed.length ? ctx.out.success("Logged out") : "Not logged in; nothing to remove",
    );
    return 0;
  },
};
