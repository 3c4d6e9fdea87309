/**
 * `shell --ssh` through the server's SSH gateway (`--sandbox-gateway host[:port]` or
 * CREATEOS_SANDBOX_GATEWAY): the public key is added to the sandbox's `ssh_pubkeys` when missing, then the
 * system `ssh` logs in as `<sandbox id>@gateway`. root gets the gateway's own session (an agent PTY: no
 * sshd needed in the image); another user goes through the gateway as a jump host to the guest's sshd,
 * which the gateway prepares with the same keys (protocol.md §3.7).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { CliError, UsageError } from "../../framework/errors.js";
import { shq } from "../../lib/api.js";
import { homeDir } from "../../lib/config.js";
import type { Sandbox } from "../../lib/sdk.js";

/** `host[:port]` (`[v6]:port`), port 2222 when left out. */
export function parseGateway(spec: string, commandPath: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s@/]+))(?::(\d{1,5}))?$/.exec(spec.trim());
  const port = m?.[3] ? Number(m[3]) : 2222;
  if (!m || port < 1 || port > 65535)
    throw new UsageError(`--sandbox-gateway wants host[:port], got "${spec}"`, commandPath);
  return { host: (m[1] ?? m[2])!, port };
}

/** This key and no other: no agent, no default identities; quiet unless something fails. */
export function identityArgs(keyPath: string): string[] {
  return ["-i", keyPath, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR"];
}

/** The `ssh` arguments of a gateway login: `user@host` last, the command (if any) after it by the caller. */
export function gatewaySshArgs(
  gw: { host: string; port: number },
  sandboxId: string,
  user: string,
  keyPath: string,
  env: NodeJS.ProcessEnv,
): string[] {
  // The gateway's host key is stable (made once in its data dir): remember it like any host's.
  const known = path.join(homeDir(env), ".ssh", "known_hosts_createos");
  const common = identityArgs(keyPath);
  const toGateway = [
    ...common,
    "-o",
    `UserKnownHostsFile=${known}`,
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-p",
    String(gw.port),
  ];
  const host = gw.host.includes(":") ? `[${gw.host}]` : gw.host;
  if (user === "root") return [...toGateway, `${sandboxId}@${host}`];
  // ssh -J does not pass -i/-o to the jump host, so the jump is spelled out as its ProxyCommand.
  const jump = ["ssh", ...toGateway, "-W", "%h:%p", `${sandboxId}@${host}`].map(shq).join(" ");
  return [
    ...common,
    "-o",
    `ProxyCommand=${jump}`,
    // Every sandbox's sshd has its own host key, behind one gateway address: nothing to pin.
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    `${user}@sandbox`,
  ];
}

/** Adds the key to the sandbox's `ssh_pubkeys` unless it is listed already (compared by its key blob). */
export async function ensureKeyListed(sb: Sandbox, keyPath: string, commandPath: string): Promise<void> {
  let pub: string;
  try {
    pub = fs.readFileSync(`${keyPath}.pub`, "utf8").trim().split("\n")[0]!;
  } catch {
    throw new UsageError(`cannot read ${keyPath}.pub (the public half of ${keyPath})`, commandPath);
  }
  const blob = pub.split(/\s+/)[1];
  if (!blob) throw new CliError(`${keyPath}.pub does not look like an OpenSSH public key`);
  const listed = (sb.data.ssh_pubkeys ?? []).some((k) => k.split(/\s+/)[1] === blob);
  if (!listed) await sb.addSSHPubkeys([pub]);
}
