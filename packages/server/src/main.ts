/**
 * `createos-sandbox`: serve, users, keys, images, doctor. Every subcommand answers `--help`.
 */
import { randomBytes } from "node:crypto";
import { constants, closeSync, existsSync, fsyncSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { startServer } from "./app.js";
import { defaultDataDir, loadConfig } from "./config.js";
import { loadDoctor, loadImages, openLocalHostd, openRemoteHostd } from "./engine.js";
import { HOSTD_HELP, runHostd } from "./hostd-cmd.js";
import { createLogger } from "./log.js";
import { SqliteStore } from "./store/sqlite.js";
import type { Store } from "./store/types.js";

const HELP: Record<string, string> = {
  main: `createos-sandbox — self-hosted microVM sandboxes

Usage:
  createos-sandbox serve [--port 8080] [--host 127.0.0.1] [--data-dir DIR] [--hostd URL …]
  createos-sandbox hostd --listen <host:port | unix:PATH> [--data-dir DIR] [--id NAME]
  createos-sandbox users create <name> [--data-dir DIR]
  createos-sandbox users list [--data-dir DIR]
  createos-sandbox keys revoke <key-prefix|key-id> [--data-dir DIR]
  createos-sandbox images build [name…]
  createos-sandbox doctor

The data dir defaults to $CREATEOS_SANDBOX_DATA_DIR or ~/.local/share/createos-sandbox.
Run any command with --help for details; configuration is described in docs/server.md.`,
  serve: `createos-sandbox serve [--port 8080] [--host 127.0.0.1] [--data-dir DIR] [--hostd URL …]

Starts the control plane and the local host daemon. The HTTP server answers at once; /readyz reports
ready once the default image is built. --port 0 picks a free port (the "listening" log line names it).
--hostd URL (repeatable: http://host:port, https://host:port or unix:/path) uses host daemons started
with \`createos-sandbox hostd\` instead of the local one; CREATEOS_SANDBOX_HOSTD_TOKEN must hold their token.

First start: with CREATEOS_SANDBOX_BOOTSTRAP_API_KEY=<key> the user "admin" is ensured with that key;
otherwise, when there are no users yet, "admin" is created and its key written to <data-dir>/admin-api-key
(mode 0600).`,
  users: `createos-sandbox users create <name> [--data-dir DIR]   create a tenant; its API key is the last line
createos-sandbox users list [--data-dir DIR]            tenants and their key prefixes
Safe while the server runs (the database is shared in WAL mode).`,
  keys: `createos-sandbox keys revoke <key-prefix|key-id|key> [--data-dir DIR]
Revokes one API key, named by its id, its first 8-12 characters (as "users list" shows) or the whole key.
An ambiguous prefix revokes nothing.`,
  hostd: HOSTD_HELP,
  images: `createos-sandbox images build [name…]
Builds the named images (all of the catalog when none are named) into ~/.cache/createos-sandbox.`,
  doctor: `createos-sandbox doctor
Checks this host (QEMU, KVM vs TCG, networking permissions, build tools, disk space, images) and prints a
table. Exits 1 if a required check fails.`,
};

interface Parsed {
  positional: string[];
  /** The last value of each flag. */
  flags: Record<string, string | true>;
  /** Every value of each flag, for the repeatable ones (--hostd). */
  all: Record<string, (string | true)[]>;
}

function parseArgs(argv: string[]): Parsed {
  const positional: string[] = [];
  const flags: Record<string, string | true> = {};
  const all: Record<string, (string | true)[]> = {};
  const set = (k: string, v: string | true) => {
    flags[k] = v;
    all[k] = [...(all[k] ?? []), v];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") flags.help = true;
    else if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      if (eq !== -1) set(a.slice(2, eq), a.slice(eq + 1));
      else {
        const next = argv[i + 1];
        if (next !== undefined && !next.startsWith("--")) {
          set(a.slice(2), next);
          i++;
        } else set(a.slice(2), true);
      }
    } else positional.push(a);
  }
  return { positional, flags, all };
}

class UsageError extends Error {}

function flagStr(p: Parsed, name: string): string | undefined {
  const v = p.flags[name];
  if (v === true) throw new UsageError(`--${name} needs a value`);
  return v;
}

function allowOnly(p: Parsed, names: string[]): void {
  for (const k of Object.keys(p.flags)) {
    if (k !== "help" && !names.includes(k)) throw new UsageError(`unknown option --${k}`);
  }
}

export function newApiKey(): string {
  return `skp_${randomBytes(24).toString("base64url")}`;
}

function openStore(p: Parsed): Store {
  const dir = flagStr(p, "data-dir") ?? defaultDataDir();
  return SqliteStore.open(join(dir, "db.sqlite"));
}

/**
 * Creates `file` 0600 with `data`, never through a link: a stale file (from an earlier database) is
 * unlinked first (unlink removes a link itself, not its target), then O_EXCL|O_NOFOLLOW refuses any
 * file or link that appeared meanwhile.
 */
function writeSecretFile(file: string, data: string): void {
  rmSync(file, { force: true });
  const fd = openSync(
    file,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function ensureAdmin(store: Store, dataDir: string, out: (s: string) => void): Promise<void> {
  const boot = process.env.CREATEOS_SANDBOX_BOOTSTRAP_API_KEY;
  if (boot) {
    const who = await store.authenticate(boot);
    const admin = (await store.getUserByName("admin")) ?? (await store.createUser("admin"));
    if (who && who.user_id !== admin.id)
      throw new Error("CREATEOS_SANDBOX_BOOTSTRAP_API_KEY belongs to another user");
    if (!who) await store.addApiKey(admin.id, boot);
    return;
  }
  const file = join(dataDir, "admin-api-key");
  if ((await store.listUsers()).length === 0) {
    const admin = await store.createUser("admin");
    const key = newApiKey();
    await store.addApiKey(admin.id, key);
    writeSecretFile(file, `${key}\n`);
    out(`created user admin; its API key is in ${file}`);
  } else if (existsSync(file)) {
    out(`admin API key file: ${file}`);
  }
}

async function serve(p: Parsed): Promise<number> {
  allowOnly(p, ["port", "host", "data-dir", "hostd"]);
  const hostdUrls = (p.all.hostd ?? []).map((v) => {
    if (v === true)
      throw new UsageError("--hostd needs a URL (http://host:port, https://host:port or unix:/path)");
    return v;
  });
  const portRaw = flagStr(p, "port");
  const port = portRaw === undefined ? undefined : Number(portRaw);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new UsageError(`--port must be 0-65535, got ${portRaw}`);
  }
  const flags: { dataDir?: string; host?: string; port?: number } = {};
  const dd = flagStr(p, "data-dir");
  if (dd) flags.dataDir = dd;
  const host = flagStr(p, "host");
  if (host) flags.host = host;
  if (port !== undefined) flags.port = port;
  const cfg = loadConfig(flags);
  const log = createLogger();
  const store = SqliteStore.open(join(cfg.dataDir, "db.sqlite"));
  await ensureAdmin(store, cfg.dataDir, (s) => log.now(s));
  const srv = await startServer(cfg, log, store);
  const daemons: { close(): Promise<void> }[] = [];
  if (hostdUrls.length) {
    log.now("listening", { url: srv.url, port: srv.port, data_dir: cfg.dataDir, hostd: hostdUrls });
    for (const url of hostdUrls) {
      // Validated before the first request, so a typo fails the start rather than every create.
      const d = openRemoteHostd(url);
      daemons.push(d);
      srv.attachHost(d, url);
    }
  } else if (cfg.hostd === "local") {
    log.now("listening", { url: srv.url, port: srv.port, data_dir: cfg.dataDir, hostd: cfg.hostd });
    const ref = srv.pendingHost("local");
    openLocalHostd(cfg.dataDir, log)
      .then(async (d) => {
        daemons.push(d);
        await srv.attachHost(d, undefined, ref);
      })
      .catch((e) => {
        ref.notReady = `host daemon failed to start: ${e instanceof Error ? e.message : String(e)}`;
        log.error("host daemon failed to start", { err: e });
      });
  } else {
    log.now("listening", { url: srv.url, port: srv.port, data_dir: cfg.dataDir, hostd: cfg.hostd });
  }
  const stop = async (sig: string) => {
    log.now("shutting down", { signal: sig });
    await srv.close().catch(() => undefined);
    // Running VMs keep running; the next start re-adopts them.
    for (const d of daemons) await d.close().catch(() => undefined);
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  return new Promise<number>(() => undefined);
}

async function users(p: Parsed): Promise<number> {
  allowOnly(p, ["data-dir"]);
  const [, sub, name] = p.positional;
  const store = openStore(p);
  try {
    if (sub === "create") {
      if (!name || !/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(name)) {
        throw new UsageError(
          "users create <name>: name must be 1-63 of [a-z0-9_.-], starting with a letter or digit",
        );
      }
      if (await store.getUserByName(name)) {
        process.stderr.write(`user ${name} already exists; issuing an additional key\n`);
      }
      const user = (await store.getUserByName(name)) ?? (await store.createUser(name));
      const key = newApiKey();
      const row = await store.addApiKey(user.id, key);
      process.stdout.write(`user ${user.name} (${user.id}), key ${row.id}\n${key}\n`);
      return 0;
    }
    if (sub === "list") {
      for (const u of await store.listUsers()) {
        const keys = u.keys.map((k) => `${k.prefix}… ${k.id}${k.revoked_at ? " (revoked)" : ""}`).join(", ");
        process.stdout.write(`${u.name}\t${u.id}\t${u.created_at}\t${keys || "no keys"}\n`);
      }
      return 0;
    }
    throw new UsageError(HELP.users!);
  } finally {
    await store.close();
  }
}

async function keys(p: Parsed): Promise<number> {
  allowOnly(p, ["data-dir"]);
  const [, sub, ref] = p.positional;
  if (sub !== "revoke" || !ref) throw new UsageError(HELP.keys!);
  const store = openStore(p);
  try {
    const { revoked, ambiguous } = await store.revokeKeys(ref);
    if (ambiguous.length) {
      process.stderr.write(
        `${ref} matches ${ambiguous.length} keys (${ambiguous.map((k) => k.id).join(", ")}); give more characters or the key id\n`,
      );
      return 1;
    }
    if (!revoked.length) {
      process.stderr.write(`no active key matches ${ref}\n`);
      return 1;
    }
    for (const k of revoked) process.stdout.write(`revoked ${k.id} (${k.prefix}…)\n`);
    return 0;
  } finally {
    await store.close();
  }
}

async function doctorCmd(): Promise<number> {
  const { doctor } = await loadDoctor();
  const checks = await doctor();
  // KVM has a TCG fallback, images build on first use, guests without the host's package sources still
  // run and forks without a reflink store copy RAM: those are reported, not required.
  const optional = new Set(["kvm", "guest egress", "snapshot store"]);
  const required = (c: (typeof checks)[number]) => !(optional.has(c.check) || c.check.startsWith("image "));
  const w = Math.max(5, ...checks.map((c) => c.check.length));
  process.stdout.write(`${"CHECK".padEnd(w)}  OK    DETAIL\n`);
  for (const c of checks) {
    const mark = c.ok ? "yes " : required(c) ? "NO  " : "no  ";
    process.stdout.write(`${c.check.padEnd(w)}  ${mark}  ${c.detail}\n`);
  }
  const failed = checks.filter((c) => !c.ok && required(c));
  if (failed.length)
    process.stdout.write(`\nrequired checks failed: ${failed.map((c) => c.check).join(", ")}\n`);
  return failed.length ? 1 : 0;
}

export async function main(argv: string[]): Promise<number> {
  const p = parseArgs(argv);
  const cmd = p.positional[0];
  if (!cmd || cmd === "help") {
    process.stdout.write(`${HELP.main}\n`);
    return cmd || p.flags.help ? 0 : 2;
  }
  if (p.flags.help) {
    const text = HELP[cmd];
    if (!text) throw new UsageError(`unknown command ${cmd}\n\n${HELP.main}`);
    process.stdout.write(`${text}\n`);
    return 0;
  }
  switch (cmd) {
    case "serve":
      return serve(p);
    case "hostd": {
      allowOnly(p, ["listen", "data-dir", "id", "tls-cert", "tls-key"]);
      const listen = flagStr(p, "listen");
      if (!listen) throw new UsageError(`--listen is required\n\n${HOSTD_HELP}`);
      const opt = (k: string) => flagStr(p, k);
      return runHostd({
        listen,
        dataDir: opt("data-dir") ?? defaultDataDir(),
        ...(opt("id") ? { id: opt("id")! } : {}),
        ...(opt("tls-cert") ? { tlsCert: opt("tls-cert")! } : {}),
        ...(opt("tls-key") ? { tlsKey: opt("tls-key")! } : {}),
      });
    }
    case "users":
      return users(p);
    case "keys":
      return keys(p);
    case "images": {
      allowOnly(p, []);
      if (p.positional[1] !== "build") throw new UsageError(HELP.images!);
      const { buildImagesCli } = await loadImages();
      return buildImagesCli(p.positional.slice(2));
    }
    case "doctor":
      allowOnly(p, []);
      return doctorCmd();
    default:
      throw new UsageError(`unknown command ${cmd}\n\n${HELP.main}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`createos-sandbox: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    }
  },
);
