import * as fs from "node:fs";
import * as path from "node:path";
import { bool, str } from "../../framework/args.js";
import type { Command, Context } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { apiStatus, sh, shq } from "../../lib/api.js";
import { homeDir } from "../../lib/config.js";
import { refuseLocalSyncPath, refuseRemoteSyncPath } from "../../lib/paths.js";
import type { Sandbox } from "../../lib/sdk.js";
import { untilInterrupted } from "../../lib/signals.js";
import {
  type Action,
  type Base,
  type Listing,
  conflictName,
  parseRemoteList,
  parseSha256sum,
  plan,
  remoteListScript,
  scanLocal,
} from "../../lib/sync.js";
import { boxArg, requireRunning } from "./common.js";
import { MAX_TRANSFER_BYTES, download } from "./files.js";

const POLL_MS = 1000;
const HASH_BATCH = 200;

interface Counts {
  pushed: number;
  pulled: number;
  deleted_local: number;
  deleted_remote: number;
  conflicts: number;
}

class SyncSession {
  private base: Base = new Map();
  private localSeen: Listing = new Map();
  private remoteSeen: Listing = new Map();
  private tooBig = new Set<string>();
  readonly counts: Counts = { pushed: 0, pulled: 0, deleted_local: 0, deleted_remote: 0, conflicts: 0 };

  constructor(
    private readonly ctx: Context,
    private readonly sb: Sandbox,
    private readonly localDir: string,
    private readonly remoteDir: string,
  ) {}

  private log(symbol: string, msg: string): void {
    this.ctx.streams.stderr.write(`${symbol} ${msg}\n`);
  }

  private remote(rel: string): string {
    return path.posix.join(this.remoteDir, rel);
  }

  private async run(script: string): Promise<string> {
    const r = await sh(this.sb, script);
    if (r.exit_code !== 0)
      throw new CliError(
        `command in the sandbox failed (exit ${r.exit_code}): ${r.stderr.trim() || r.error || ""}`,
      );
    return r.stdout;
  }

  private async scanRemote(): Promise<Listing> {
    const entries = parseRemoteList(await this.run(remoteListScript(shq(this.remoteDir))));
    const out: Listing = new Map();
    const rehash: string[] = [];
    for (const e of entries) {
      const prev = this.remoteSeen.get(e.path);
      if (prev && prev.size === e.size && prev.mtime === e.mtime) out.set(e.path, prev);
      else rehash.push(e.path);
    }
    for (let i = 0; i < rehash.length; i += HASH_BATCH) {
      const batch = rehash.slice(i, i + HASH_BATCH);
      // Files can vanish between the listing and the hash; `|| true` keeps the others.
      const stdout = await this.run(
        `cd ${shq(this.remoteDir)} && sha256sum -- ${batch.map((p) => shq(`./${p}`)).join(" ")} 2>/dev/null || true`,
      );
      const hashes = parseSha256sum(stdout);
      for (const p of batch) {
        const e = entries.find((x) => x.path === p);
        const h = hashes.get(p);
        if (e && h) out.set(p, { size: e.size, mtime: e.mtime, hash: h });
      }
    }
    return out;
  }

  private async push(rel: string): Promise<void> {
    const file = path.join(this.localDir, rel);
    const data = fs.readFileSync(file);
    await this.sb.files.upload(this.remote(rel), data, { timeoutMs: 0 });
  }

  private async pull(rel: string): Promise<void> {
    const res = await download(this.ctx, this.sb, this.remote(rel));
    const data = Buffer.from(await res.arrayBuffer());
    const target = path.join(this.localDir, rel);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const tmp = path.join(path.dirname(target), `.${path.basename(target)}.createos-sync.${process.pid}`);
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target);
  }

  /** One pass: scan both sides, compare with the base, apply. */
  async cycle(): Promise<void> {
    const local = scanLocal(this.localDir, this.localSeen);
    const remote = await this.scanRemote();
    this.localSeen = local;
    this.remoteSeen = remote;
    const actions = plan(local, remote, this.base);
    const transfers = actions.filter((a) => a.op === "push" || (a.op === "conflict" && a.winner === "local"));
    const dirs = new Set(transfers.map((a) => path.posix.dirname(this.remote(a.path))));
    if (dirs.size) await this.run(`mkdir -p -- ${[...dirs].map(shq).join(" ")}`);
    const deletes: string[] = [];
    for (const a of actions) await this.apply(a, local, remote, deletes);
    if (deletes.length) {
      await this.run(`cd ${shq(this.remoteDir)} && rm -f -- ${deletes.map((p) => shq(`./${p}`)).join(" ")}`);
    }
  }

  private oversize(rel: string, size: number | undefined): boolean {
    if (size === undefined || size <= MAX_TRANSFER_BYTES) return false;
    if (!this.tooBig.has(rel)) {
      this.tooBig.add(rel);
      this.ctx.out.warn(`skipping ${rel}: larger than 500 MB`);
    }
    return true;
  }

  private async apply(a: Action, local: Listing, remote: Listing, deletes: string[]): Promise<void> {
    const l = local.get(a.path);
    const r = remote.get(a.path);
    switch (a.op) {
      case "same":
        this.base.set(a.path, a.hash);
        return;
      case "forget":
        this.base.delete(a.path);
        return;
      case "push":
        if (this.oversize(a.path, l?.size) || !l) return;
        await this.push(a.path);
        this.base.set(a.path, l.hash);
        this.counts.pushed++;
        this.log("→", a.path);
        return;
      case "pull":
        if (this.oversize(a.path, r?.size) || !r) return;
        await this.pull(a.path);
        this.base.set(a.path, r.hash);
        this.counts.pulled++;
        this.log("←", a.path);
        return;
      case "delete-local":
        fs.rmSync(path.join(this.localDir, a.path), { force: true });
        this.base.delete(a.path);
        this.counts.deleted_local++;
        this.log("✗", `${a.path} (deleted in the sandbox)`);
        return;
      case "delete-remote":
        deletes.push(a.path);
        this.base.delete(a.path);
        this.counts.deleted_remote++;
        this.log("✗", `${a.path} (deleted locally)`);
        return;
      case "conflict": {
        if (!l || !r || this.oversize(a.path, Math.max(l.size, r.size))) return;
        const loser = conflictName(a.path, new Date());
        if (a.winner === "local") {
          await this.run(`mv -f -- ${shq(this.remote(a.path))} ${shq(this.remote(loser))}`);
          await this.push(a.path);
          this.base.set(a.path, l.hash);
        } else {
          fs.renameSync(path.join(this.localDir, a.path), path.join(this.localDir, loser));
          await this.pull(a.path);
          this.base.set(a.path, r.hash);
        }
        this.counts.conflicts++;
        this.log(
          "!",
          `conflict on ${a.path}: the ${a.winner} copy is newer and wins; the other is kept as ${path.posix.basename(loser)} (${a.winner === "local" ? "in the sandbox" : "locally"})`,
        );
        return;
      }
    }
  }
}

export const syncCommand: Command = {
  kind: "command",
  name: "sync",
  summary: "Two-way sync a local directory with a sandbox directory until Ctrl-C",
  usage: "<name|id> --local <dir> --remote <abs-dir> [--once] [--force]",
  description:
    "Builds on the files API and exec (no SSH, no Mutagen): a first pass reconciles both trees by\n" +
    "content hash; then local changes are picked up by a file watcher and sandbox changes by a\n" +
    "poll every second. Edits and deletes propagate. When a file changed on both sides since the\n" +
    "last sync, the newer mtime wins and the other copy is kept as <name>.conflict-<timestamp>.\n" +
    "VCS directories (.git, .hg, .svn) are skipped.\n\n" +
    "Refused: local /, $HOME itself, anything outside $HOME or /tmp and credential directories\n" +
    "(~/.ssh ~/.gnupg ~/.aws ~/.config ~/.docker ~/.kube ~/.gcloud ~/.azure) unless --force;\n" +
    "remote relative paths, / and system directories (/etc /usr /bin /sbin /lib /lib64 /boot /proc\n" +
    "/sys /dev /run) always.",
  flags: [
    {
      name: "local",
      short: "l",
      type: "string",
      value: "<dir>",
      description: "Local directory (created if missing)",
    },
    {
      name: "remote",
      short: "r",
      type: "string",
      value: "<abs-dir>",
      description: "Directory in the sandbox (created if missing)",
    },
    { name: "once", type: "boolean", description: "Reconcile once and exit instead of watching" },
    {
      name: "force",
      type: "boolean",
      description: "Allow local paths outside $HOME//tmp and credential directories",
    },
  ],
  args: { max: 1 },
  completes: "sandbox",
  examples: [
    "createos sandbox sync my-box --local ~/work/project --remote /root/work",
    "createos sandbox sync my-box --local ./site --remote /srv/site --once",
  ],
  async run(ctx, { flags, positionals }) {
    const cp = ctx.commandPath;
    const localArg = str(flags, "local");
    const remoteDir = str(flags, "remote");
    if (!localArg) throw new UsageError("--local <dir> is required", cp);
    if (!remoteDir) throw new UsageError("--remote <abs-dir> is required", cp);
    const badRemote = refuseRemoteSyncPath(remoteDir);
    if (badRemote) throw new UsageError(badRemote, cp);
    const localDir = path.resolve(localArg);
    const badLocal = refuseLocalSyncPath(localDir, homeDir(ctx.env), bool(flags, "force"));
    if (badLocal) throw new UsageError(badLocal, cp);
    if (fs.existsSync(localDir) && !fs.statSync(localDir).isDirectory())
      throw new UsageError(`${localArg} is not a directory`, cp);
    const sb = await boxArg(ctx, positionals[0], ["running"], "sync with");
    requireRunning(sb);
    fs.mkdirSync(localDir, { recursive: true });
    const remoteNorm = path.posix.normalize(remoteDir).replace(/\/+$/, "");
    const session = new SyncSession(ctx, sb, localDir, remoteNorm);
    const where = `${localDir} ⇄ ${sb.data.name ?? sb.id}:${remoteNorm}`;
    await ctx.out.step(
      `Reconciling ${where}`,
      () => session.cycle(),
      () => `Reconciled ${where}`,
    );
    const summary = () => ({
      action: bool(flags, "once") ? "synced" : "sync_stopped",
      id: sb.id,
      local: localDir,
      remote: remoteNorm,
      ...session.counts,
    });
    if (bool(flags, "once")) {
      ctx.out.result(summary(), () => summarize(session.counts));
      return 0;
    }
    ctx.out.info(`Watching ${where} (Ctrl-C to stop)`);
    const stop = untilInterrupted();
    let stopped = false;
    let dirty = false;
    let wake: (() => void) | undefined;
    const watcher = (() => {
      try {
        return fs.watch(localDir, { recursive: true }, () => {
          dirty = true;
          wake?.();
        });
      } catch {
        return undefined; // polling alone still converges within a second
      }
    })();
    void stop.done.then(() => {
      stopped = true;
      wake?.();
    });
    let failures = 0;
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, dirty ? 150 : POLL_MS);
        wake = () => {
          clearTimeout(t);
          // Let a burst of writes settle before scanning.
          setTimeout(resolve, stopped ? 0 : 150);
        };
      });
      wake = undefined;
      dirty = false;
      if (stopped) break;
      try {
        await session.cycle();
        failures = 0;
      } catch (err) {
        const status = apiStatus(err);
        if (status === 404 || status === 409) {
          watcher?.close();
          stop.dispose();
          throw err;
        }
        failures++;
        ctx.out.warn(`sync pass failed (${(err as Error).message}); retrying`);
        if (failures >= 30) {
          watcher?.close();
          stop.dispose();
          throw err;
        }
      }
    }
    watcher?.close();
    stop.dispose();
    ctx.out.result(summary(), () => `Sync stopped. ${summarize(session.counts)}`);
    return 0;
  },
};

function summarize(c: Counts): string {
  return `${c.pushed} pushed, ${c.pulled} pulled, ${c.deleted_local + c.deleted_remote} deleted, ${c.conflicts} conflicts`;
}
