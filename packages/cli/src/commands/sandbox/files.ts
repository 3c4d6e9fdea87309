import * as fs from "node:fs";
import * as path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Command, Context } from "../../framework/command.js";
import { CliError, UsageError } from "../../framework/errors.js";
import { apiStatus } from "../../lib/api.js";
import { refuseRelativeRemote } from "../../lib/paths.js";
import type { Sandbox } from "../../lib/sdk.js";
import { type Progress, startProgress } from "../../ui/progress.js";
import { formatBytes } from "../../ui/table.js";
import { boxArg, label, requireRunning } from "./common.js";

export const MAX_TRANSFER_BYTES = 500 * 1000 * 1000;
/** Below this a progress bar would only flicker. */
const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

/**
 * Files API writes into an S3 (geesefs) mount crash the mount, so transfers there are refused;
 * when the mounts cannot be listed we fail closed — unless the server has no disk support at all.
 */
async function refuseDiskMount(sb: Sandbox, remote: string): Promise<void> {
  let disks: { mount_path: string; name: string }[];
  try {
    disks = await sb.listDisks();
  } catch (err) {
    const status = apiStatus(err);
    if (status === 404 || status === 501 || status === 503) return;
    throw new CliError(`cannot check the sandbox's disk mounts: ${(err as Error).message}`);
  }
  const norm = path.posix.normalize(remote);
  for (const d of disks) {
    const mp = d.mount_path.replace(/\/+$/, "");
    if (norm === mp || norm.startsWith(`${mp}/`)) {
      throw new CliError(
        `${remote} is inside S3 disk "${d.name}" mounted at ${d.mount_path}; file transfers into disk mounts are not supported`,
      );
    }
  }
}

function counter(limit: number, progress: Progress | undefined, onBytes: (n: number) => void): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > limit) {
        cb(new CliError(`transfer exceeds the ${formatBytes(limit)} limit per file`));
        return;
      }
      progress?.add(chunk.length);
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
}

export const pushCommand: Command = {
  kind: "command",
  name: "push",
  aliases: ["upload"],
  summary: "Upload a file (or stdin) to a sandbox",
  usage: "<name|id> <local-file|-> <absolute-remote-path>",
  description:
    "Max 500 MB per file. Remote paths must be absolute; parent directories are created.\nDirectories are refused — tar them: tar -c mydir | createos sandbox push my-box - /tmp/mydir.tar",
  args: { min: 3, max: 3 },
  completes: "sandbox",
  examples: [
    "createos sandbox push my-box ./main.py /workspace/main.py",
    "tar -c mydir | createos sandbox push my-box - /tmp/bundle.tar",
  ],
  async run(ctx, { positionals }) {
    const [ref, local, remote] = positionals as [string, string, string];
    const bad = refuseRelativeRemote(remote);
    if (bad) throw new UsageError(bad, ctx.commandPath);
    let size: number | undefined;
    if (local !== "-") {
      let st: fs.Stats;
      try {
        st = fs.statSync(local);
      } catch {
        throw new UsageError(`no such file: ${local}`, ctx.commandPath);
      }
      if (st.isDirectory()) {
        throw new UsageError(
          `${local} is a directory; tar it: tar -c ${local} | createos sandbox push ${ref} - ${remote}.tar`,
          ctx.commandPath,
        );
      }
      if (st.size > MAX_TRANSFER_BYTES) {
        throw new UsageError(
          `${local} is ${formatBytes(st.size)}; the limit is 500 MB per file`,
          ctx.commandPath,
        );
      }
      size = st.size;
    }
    const sb = await boxArg(ctx, ref, ["running"], "upload to");
    requireRunning(sb);
    await refuseDiskMount(sb, remote);
    const showProgress =
      ctx.out.stderrTTY &&
      (size === undefined ? local === "-" && !ctx.streams.stdin.isTTY : size >= PROGRESS_MIN_BYTES);
    const progress = showProgress
      ? startProgress(ctx.streams.stderr, `Uploading ${path.basename(remote)}`, size)
      : undefined;
    let bytes = 0;
    let body: Parameters<Sandbox["files"]["upload"]>[1];
    if (local !== "-" && !progress) {
      // A Blob carries Content-Length, which the server prefers for files.
      body = await fs.openAsBlob(local);
      bytes = size ?? 0;
    } else {
      const source = local === "-" ? ctx.streams.stdin : fs.createReadStream(local);
      const counted = source.pipe(
        counter(MAX_TRANSFER_BYTES, progress, (n) => {
          bytes += n;
        }),
      );
      source.on("error", (err: Error) => counted.destroy(err));
      body = Readable.toWeb(counted) as unknown as typeof body;
    }
    await sb.files.upload(remote, body, { timeoutMs: 0, retry: false });
    progress?.done();
    ctx.out.result({ action: "pushed", id: sb.id, remote_path: remote, bytes }, () =>
      ctx.out.success(
        `Uploaded ${local === "-" ? "stdin" : local} → ${sb.data.name ?? sb.id}:${remote} (${formatBytes(bytes)})`,
      ),
    );
    return 0;
  },
};

export async function download(ctx: Context, sb: Sandbox, remote: string): Promise<Response> {
  const api = await ctx.api();
  const p = `/v1/sandboxes/${encodeURIComponent(sb.id)}/files`;
  const res = await api.client.http.requestRaw("GET", p, { query: { path: remote }, timeoutMs: 0 });
  if (!res.ok) {
    if (res.status === 404) {
      // 404 covers both a missing file and a missing sandbox; we know the sandbox exists.
      await res.body?.cancel();
      throw new CliError(`not found: ${remote} in ${label(sb.data)}`, "not_found");
    }
    await api.client.http.throwForResponse(res, "GET", p);
  }
  return res;
}

export const pullCommand: Command = {
  kind: "command",
  name: "pull",
  aliases: ["download"],
  summary: "Download a file from a sandbox (to a file or stdout)",
  usage: "<name|id> <absolute-remote-path> <local-path|->",
  description: "A local directory receives the file under its remote name; `-` writes to stdout. Max 500 MB.",
  args: { min: 3, max: 3 },
  completes: "sandbox",
  examples: [
    "createos sandbox pull my-box /workspace/result.csv ./result.csv",
    "createos sandbox pull my-box /workspace/result.csv - | head -5",
  ],
  async run(ctx, { positionals }) {
    const [ref, remote, localArg] = positionals as [string, string, string];
    const bad = refuseRelativeRemote(remote);
    if (bad) throw new UsageError(bad, ctx.commandPath);
    let local = localArg;
    if (local !== "-" && fs.existsSync(local) && fs.statSync(local).isDirectory()) {
      local = path.join(local, path.posix.basename(remote));
    }
    const sb = await boxArg(ctx, ref, ["running"], "download from");
    requireRunning(sb);
    await refuseDiskMount(sb, remote);
    const res = await download(ctx, sb, remote);
    const lenHeader = res.headers.get("content-length");
    const total = lenHeader ? Number(lenHeader) : undefined;
    if (total !== undefined && total > MAX_TRANSFER_BYTES) {
      await res.body?.cancel();
      throw new CliError(`${remote} is ${formatBytes(total)}; the limit is 500 MB per file`);
    }
    const showProgress = ctx.out.stderrTTY && (total === undefined || total >= PROGRESS_MIN_BYTES);
    const progress = showProgress
      ? startProgress(ctx.streams.stderr, `Downloading ${path.posix.basename(remote)}`, total)
      : undefined;
    const body = res.body
      ? Readable.fromWeb(res.body as import("node:stream/web").ReadableStream)
      : Readable.from([]);
    let bytes = 0;
    const count = counter(MAX_TRANSFER_BYTES, progress, (n) => {
      bytes += n;
    });
    if (local === "-") {
      await pipeline(body, count, ctx.streams.stdout, { end: false });
      progress?.done();
      return 0;
    }
    // Write next to the target and rename, so a failed download never leaves a partial file.
    const tmp = path.join(path.dirname(local), `.${path.basename(local)}.createos-${process.pid}.part`);
    try {
      await pipeline(body, count, fs.createWriteStream(tmp));
      fs.renameSync(tmp, local);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    progress?.done();
    ctx.out.result(
      { action: "pulled", id: sb.id, remote_path: remote, local_path: path.resolve(local), bytes },
      () =>
        ctx.out.success(`Downloaded ${sb.data.name ?? sb.id}:${remote} → ${local} (${formatBytes(bytes)})`),
    );
    return 0;
  },
};
