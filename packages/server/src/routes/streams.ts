/**
 * Byte-moving routes: exec (buffered and NDJSON), files, and the `Upgrade: tcp-tunnel` shell and tunnel.
 * Bytes flow daemon → this process → client as streams; nothing is buffered whole except buffered exec
 * output, which is capped.
 */
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { StringDecoder } from "node:string_decoder";
import { ApiError, type ExecRequest, apiError, validationError } from "@createos-sandbox/protocol";
import { type Static, Type } from "@sinclair/typebox";
import { mapHostdError } from "../hosterr.js";
import type { Ctx, Query, Route, UpgradeCtx } from "../http/server.js";
import { bool, envs, str, strings } from "../schema.js";
import { splice } from "../splice.js";
import type { SandboxRow } from "../store/types.js";
import { absolutePathError } from "../validate.js";
import { type App, loadSandbox, route } from "./common.js";
import { linkShell, openRuntime, openShell, typeInto } from "./pty.js";

const EXEC_BUFFER_CAP = 16 * 1024 * 1024;

/** The `?path=` of a file route: an absolute path, or 400. */
function filePath(query: Query): string {
  const path = query.path ?? null;
  const perr = absolutePathError(path);
  if (perr) throw validationError(perr);
  return path!;
}

const ExecBody = Type.Object({
  cmd: str("cmd", { required: true, max: 4096 }),
  args: strings("args", { max: 4096 }),
  stdin: Type.Optional(
    Type.Unsafe<string | null>({ type: ["string", "null"], "x-msg": "stdin must be a string" }),
  ),
  env: envs("env"),
  stream: bool("stream"),
  cwd: str("cwd", { max: 4096, re: /^\//, reMsg: "cwd must be an absolute path" }),
});
const exec = { auth: "runtime", body: "json", schema: { body: ExecBody } } as const;

export function streamRoutes(app: App): Route[] {
  return [
    route("POST /v1/sandboxes/:id/exec", exec, async (ctx) => {
      const b = ctx.body as Static<typeof ExecBody>;
      const { cmd, stdin: stdinRaw, cwd } = b;
      const args = b.args ?? [];
      const env = b.env ?? undefined;
      const streamFlag = b.stream;
      let row = await loadSandbox(app, ctx);
      if (env) {
        // Own keys only: `in` also finds the prototype's (`constructor`, `toString`) on every object.
        const undeclared = Object.keys(env).filter((k) => !Object.hasOwn(row.envs, k));
        if (undeclared.length) {
          throw validationError({
            env: `undeclared env key: ${undeclared.join(", ")} (exec env may only override keys declared in the sandbox's envs)`,
          });
        }
      }
      row = await app.sandboxes.awaitRunning(row, "exec in");
      const daemon = app.sandboxes.daemonFor(row);
      const streaming = ctx.query.stream === "true" || streamFlag === true;
      // a template's WORKDIR and USER are the defaults of every exec in sandboxes made from it
      const tpl = app.templates?.execDefaults(row.rootfs);
      const argv =
        tpl && tpl.user !== "root" ? ["runuser", "-u", tpl.user, "--", cmd!, ...args] : [cmd!, ...args];
      const dir = cwd ?? (tpl && tpl.cwd !== "/" ? tpl.cwd : undefined);
      const req = {
        argv,
        ...(env ? { env } : {}),
        ...(dir ? { cwd: dir } : {}),
        ...(typeof stdinRaw === "string" && stdinRaw !== "" ? { stdin: Buffer.from(stdinRaw) } : {}),
      };
      const ac = new AbortController();
      // The client went away before the answer: kill the command (protocol.md §3.1).
      ctx.res.on("close", () => {
        if (!ctx.res.writableFinished) ac.abort();
      });
      // …also when it left during an earlier await, before that listener existed.
      if (ctx.req.raw.socket.destroyed) ac.abort();
      const claim = app.tenantStreams.open(row.user_id, streaming ? 0 : EXEC_BUFFER_CAP);
      app.sandboxes.streamOpened(row.id);
      try {
        if (!streaming) {
          const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], n: 0 };
          const keep = (arr: Buffer[]) => (c: Buffer) => {
            if (out.n + c.length > EXEC_BUFFER_CAP) return;
            out.n += c.length;
            arr.push(c);
          };
          // The host daemon counts what a buffered exec holds against the sandbox's budget (429 past it).
          const buffered = { ...req, bufferBytes: EXEC_BUFFER_CAP };
          const r = await daemon
            .exec(row.id, buffered, { onStdout: keep(out.stdout), onStderr: keep(out.stderr) }, ac.signal)
            .catch((e) => {
              throw mapHostdError(e, { action: "exec in" });
            });
          const result: { stdout: string; stderr: string; exit_code: number; error?: string } = {
            stdout: Buffer.concat(out.stdout).toString("utf8"),
            stderr: Buffer.concat(out.stderr).toString("utf8"),
            exit_code: r.exit_code,
          };
          if (r.error) result.error = r.error;
          ctx.logFields.exit_code = r.exit_code;
          return { data: { result, exec_ms: r.exec_ms } };
        }
        await streamExec(app, ctx, row, req, ac);
        return undefined;
      } finally {
        claim.release();
        app.sandboxes.streamClosed(row.id);
      }
    }),
    route("PUT /v1/sandboxes/:id/files", { auth: "runtime", body: "raw" }, async (ctx) => {
      const path = filePath(ctx.query);
      const limit = app.cfg.maxFileBytes;
      const declared = ctx.req.headers["content-length"];
      const raw = ctx.req.raw;
      if (declared !== undefined && Number(declared) > limit) throw apiError("file_too_large", { limit });
      // The row as running: a resume may have placed it on another host.
      const row = await app.sandboxes.awaitRunning(await loadSandbox(app, ctx), "write files to");
      const daemon = app.sandboxes.daemonFor(row);
      let seen = 0;
      let over = false;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          seen += chunk.length;
          if (seen > limit) {
            over = true;
            cb(apiError("file_too_large", { limit }));
            return;
          }
          cb(null, chunk);
        },
      });
      const claim = app.tenantStreams.open(row.user_id);
      raw.on("error", (e) => counter.destroy(e));
      raw.pipe(counter);
      app.sandboxes.streamOpened(row.id);
      try {
        const res = await daemon.writeFile(row.id, path, counter).catch((e) => {
          throw over
            ? apiError("file_too_large", { limit })
            : mapHostdError(e, { action: "write files to", path });
        });
        return { data: { path, bytes: res.bytes } };
      } finally {
        claim.release();
        app.sandboxes.streamClosed(row.id);
      }
    }),
    route("GET /v1/sandboxes/:id/files", { auth: "runtime", body: "none" }, async (ctx) => {
      const path = filePath(ctx.query);
      // The row as running: a resume may have placed it on another host.
      const row = await app.sandboxes.awaitRunning(await loadSandbox(app, ctx), "read files from");
      const daemon = app.sandboxes.daemonFor(row);
      const claim = app.tenantStreams.open(row.user_id);
      const opened = await daemon.readFile(row.id, path).catch((e) => {
        claim.release();
        throw mapHostdError(e, { action: "read files from", path });
      });
      const { stat, body } = opened;
      // The client left while the guest opened the file, or it is too large: nothing is sent.
      const refusal =
        stat.size > app.cfg.maxFileBytes
          ? apiError("file_too_large", { limit: app.cfg.maxFileBytes })
          : undefined;
      if (refusal || ctx.req.raw.socket.destroyed) {
        body.destroy();
        claim.release();
        if (refusal) throw refusal;
        return undefined;
      }
      ctx.reply.hijack();
      ctx.res.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-length": stat.size,
        "x-request-id": ctx.reqId,
      });
      app.sandboxes.streamOpened(row.id);
      try {
        await pipeline(body, ctx.res);
      } catch {
        // pipeline stops reading the guest while the client is slow; on a broken end nothing is left to say.
        ctx.res.destroy();
      } finally {
        claim.release();
        app.sandboxes.streamClosed(row.id);
      }
      return undefined;
    }),
    route("POST /v1/sandboxes/:id/shell", { auth: "runtime", body: "none", upgrade: shell(app) }),
    route("POST /v1/sandboxes/:id/tunnel/:port", { auth: "runtime", body: "none", upgrade: tunnel(app) }),
  ];
}

async function streamExec(
  app: App,
  ctx: Ctx,
  row: SandboxRow,
  req: ExecRequest,
  ac: AbortController,
): Promise<void> {
  const res = ctx.res;
  const id = row.id;
  const daemon = app.sandboxes.daemonFor(row);
  let lastWrite = Date.now();
  const frame = (obj: Record<string, unknown>) => {
    if (!res.headersSent) {
      // Headers wait for the first frame, so a refusal before any output is still a JSend error.
      ctx.reply.hijack();
      res.writeHead(200, {
        "content-type": "application/x-ndjson",
        "cache-control": "no-store",
        "x-request-id": ctx.reqId,
      });
    }
    lastWrite = Date.now();
    return res.destroyed || res.write(`${JSON.stringify(obj)}\n`);
  };
  // A full socket buffer: the chunk is not taken until the client reads (the guest gets no credit
  // meanwhile, so the command slows instead of filling memory). A closed client aborts the exec.
  const taken = (ok: boolean): Promise<void> | undefined =>
    ok
      ? undefined
      : new Promise((resolve) => {
          const done = () => {
            res.off("drain", done);
            res.off("close", done);
            resolve();
          };
          res.on("drain", done);
          res.on("close", done);
        });
  const hbMs = app.cfg.execHeartbeatMs;
  const hb = setInterval(
    () => {
      if (Date.now() - lastWrite >= hbMs - 50) frame({ hb: true });
    },
    Math.max(50, Math.floor(hbMs / 5)),
  );
  const outDec = new StringDecoder("utf8");
  const errDec = new StringDecoder("utf8");
  try {
    const r = await daemon.exec(
      id,
      req,
      {
        onStdout: (c) => {
          const s = outDec.write(c);
          return s ? taken(frame({ stdout: s })) : undefined;
        },
        onStderr: (c) => {
          const s = errDec.write(c);
          return s ? taken(frame({ stderr: s })) : undefined;
        },
      },
      ac.signal,
    );
    const restOut = outDec.end();
    if (restOut) frame({ stdout: restOut });
    const restErr = errDec.end();
    if (restErr) frame({ stderr: restErr });
    if (r.error) frame({ error: r.error });
    frame({ exit_code: r.exit_code });
    ctx.logFields.exit_code = r.exit_code;
    res.end();
  } catch (e) {
    if (!res.headersSent) throw mapHostdError(e, { action: "exec in" });
    if (!ac.signal.aborted) {
      // Engine words stay in the log; the client gets the catalog's.
      const mapped = mapHostdError(e, { action: "exec in" });
      app.log.warn("exec stream failed", { req_id: ctx.reqId, sandbox_id: id, detail: String(e) });
      frame({ error: mapped instanceof ApiError ? mapped.message : "internal error" });
      frame({ exit_code: -1 });
    }
    res.end();
  } finally {
    clearInterval(hb);
  }
}

function shell(app: App) {
  return async (u: UpgradeCtx): Promise<void> => {
    const opened = await openShell(app, u);
    if (!opened) return;
    const { row, pty, claim } = opened;
    const sock = u.accept();
    let buf: Buffer = Buffer.alloc(0);
    let ended = false;
    // Once the shell is over nothing is parsed again: what the client still sends is dropped (not kept
    // for a frame that will never be read), and a client that does not close goes after a moment.
    const close = linkShell(
      app,
      row,
      pty,
      claim,
      () => {
        ended = true;
        buf = Buffer.alloc(0);
        sock.end();
        setTimeout(() => sock.destroy(), 2000).unref();
      },
      0,
    );
    pty.stream.on("data", (d: Buffer) => {
      if (!sock.write(d)) {
        pty.stream.pause();
        sock.once("drain", () => pty.stream.resume());
      }
    });
    const onData = (chunk: Buffer) => {
      if (ended) return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 5) {
        const type = buf[0]!;
        const len = buf.readUInt32BE(1);
        if (len > 1024 * 1024) return close(false);
        if (buf.length < 5 + len) break;
        const payload = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        if (type === 0x00) {
          typeInto(
            pty,
            payload,
            () => sock.pause(),
            () => sock.resume(),
          );
        } else if (type === 0x01 && payload.length >= 4) {
          const rows = payload.readUInt16BE(0);
          const cols = payload.readUInt16BE(2);
          if (rows > 0 && cols > 0) pty.resize(rows, cols);
        }
      }
      void app.sandboxes.touch(row.id);
    };
    if (u.head.length) onData(u.head);
    sock.on("data", onData);
    for (const ev of ["end", "close", "error"]) sock.on(ev, () => close(false));
  };
}

function tunnel(app: App) {
  return async (u: UpgradeCtx): Promise<void> => {
    const portStr = u.params.port ?? "";
    const port = /^\d{1,5}$/.test(portStr) ? Number(portStr) : 0;
    if (port < 1 || port > 65535) throw validationError({ port: "port must be an integer in 1-65535" });
    const { row, daemon } = await openRuntime(app, u, "open a tunnel into");
    const claim = app.tenantStreams.open(row.user_id);
    const conn = await daemon.connectTcp(row.id, port).catch((e) => {
      claim.release();
      const mapped = mapHostdError(e, { action: "open a tunnel into" });
      throw mapped === e ? apiError("upstream_connect_failed", { port }) : mapped;
    });
    // The client left while the guest connected: undo instead of accepting a dead socket.
    if (u.signal.aborted) {
      conn.destroy();
      claim.release();
      return;
    }
    const sock = u.accept();
    app.sandboxes.streamOpened(row.id);
    if (u.head.length) conn.write(u.head);
    splice(sock, conn, () => {
      claim.release();
      app.sandboxes.streamClosed(row.id);
    });
  };
}
