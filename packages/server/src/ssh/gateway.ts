/**
 * The SSH gateway (protocol.md §3.7), its own listener (CREATEOS_SANDBOX_SSH_LISTEN), on the `ssh2`
 * library: public-key logins for a sandbox (auth.ts), session channels into it (session.ts), and
 * `direct-tcpip` channels to `127.0.0.1:<port>` inside it through the host daemon's tunnel, so
 * `ssh -J <id>@gateway root@sandbox` (the guest's own sshd, sshd.ts) and `ssh -L` work. The destination
 * host of a `direct-tcpip` request is not looked at: a login is for one sandbox, and its loopback is where
 * every forward lands.
 */
import type { AddressInfo } from "node:net";
import ssh2, {
  type AuthContext,
  type Connection,
  type ParsedKey,
  type Server,
  type ServerChannel,
} from "ssh2";
import { clientAddress } from "../http/conn.js";
import type { App } from "../routes/common.js";
import { parseListen } from "../routes/metrics.js";
import { splice } from "../splice.js";
import { LoginFailures, loadHostKey, resolveLogin } from "./auth.js";
import { refusalText, runningSandbox, serveSession } from "./session.js";
import { prepareGuestSshd } from "./sshd.js";

/** Refused attempts one connection may make before it is closed (OpenSSH's MaxAuthTries). */
const MAX_TRIES = 6;

export interface GatewayServer {
  server: Server;
  address: string;
  port: number;
  close(): Promise<void>;
}

export async function startGateway(app: App, spec: string): Promise<GatewayServer> {
  const { host, port } = parseListen(spec, "CREATEOS_SANDBOX_SSH_LISTEN");
  const hostKey = await loadHostKey(app.cfg.dataDir);
  const failures = new LoginFailures(app.cfg.authFailPerSecond, app.cfg.authFailBurst);
  const open = new Set<Connection>();
  const server = new ssh2.Server({ hostKeys: [hostKey], ident: "createos-sandbox" }, (conn, info) => {
    open.add(conn);
    conn.once("close", () => open.delete(conn));
    onConnection(app, failures, conn, clientAddress({ remoteAddress: info.ip }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    server,
    address: host,
    port: bound,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const c of open) c.end();
      }),
  };
}

function onConnection(app: App, failures: LoginFailures, conn: Connection, addr: string): void {
  const wait = failures.blocked(addr);
  if (wait > 0) {
    app.log.warn("ssh refused", { addr, reason: `too many failed logins; retry in ${wait} s` });
    conn.end();
    return;
  }
  let sandboxId: string | undefined;
  let who = "";
  let refused = 0;
  conn.on("error", () => undefined);
  conn.on("close", () => {
    if (!sandboxId && refused > 0) failures.failed(addr);
  });
  conn.on("authentication", (ctx) => {
    void authenticate(app, ctx).then(
      (ok) => {
        if (typeof ok === "string") {
          sandboxId = ok;
          who = `${ctx.username}@${addr}`;
          app.log.info("ssh login", { sandbox_id: ok, user: ctx.username, addr });
          ctx.accept();
          return;
        }
        if (ctx.method === "publickey") {
          refused++;
          app.log.info("ssh refused", { addr, user: ctx.username.slice(0, 100), reason: ok.refused });
        }
        if (refused >= MAX_TRIES) conn.end();
        else ctx.reject(["publickey"]);
      },
      (e) => {
        app.log.error("ssh authentication failed", { addr, err: e });
        ctx.reject(["publickey"]);
      },
    );
  });
  conn.on("ready", () => {
    const id = sandboxId!;
    conn.on("session", (accept) => serveSession(app, id, accept(), who));
    conn.on("tcpip", (accept, reject, info) => {
      void forward(app, id, info.destPort, accept).catch((e) => {
        app.log.info("ssh forward refused", {
          sandbox_id: id,
          who,
          port: info.destPort,
          reason: refusalText(e),
        });
        reject();
      });
    });
    // Remote forwards (-R) and the rest are not offered.
    conn.on("request", (_accept, reject) => reject?.());
  });
}

/**
 * The sandbox id this attempt logs into, or why not. A key offered without a signature is only asked
 * about (OpenSSH probes before signing): it is answered "acceptable" when listed, nothing more.
 */
async function authenticate(app: App, ctx: AuthContext): Promise<string | { refused: string }> {
  if (ctx.method !== "publickey") return { refused: "" };
  const hit = await resolveLogin(app.store, ctx.username, ctx.key.data);
  if ("refused" in hit) return hit;
  if (!ctx.signature || !ctx.blob) return hit.row.id;
  return verify(hit.key, ctx.blob, ctx.signature, ctx.hashAlgo) ? hit.row.id : { refused: "bad signature" };
}

function verify(key: ParsedKey, blob: Buffer, sig: Buffer, hashAlgo: string | undefined): boolean {
  const ok = hashAlgo ? key.verify(blob, sig, hashAlgo) : key.verify(blob, sig);
  return ok === true;
}

/** `direct-tcpip` to guest `port`: the guest's sshd is prepared first for port 22. */
async function forward(app: App, id: string, port: number, accept: () => ServerChannel): Promise<void> {
  const row = await runningSandbox(app, id, "open a tunnel into");
  const daemon = app.sandboxes.daemonFor(row);
  if (port === 22) {
    const prep = await prepareGuestSshd(daemon, row);
    if (prep !== 0) app.log.warn("guest sshd not prepared", { sandbox_id: id, exit_code: prep });
  }
  const claim = app.tenantStreams.open(row.user_id);
  const guest = await daemon.connectTcp(id, port).catch((e) => {
    claim.release();
    throw e;
  });
  const ch = accept();
  app.sandboxes.streamOpened(id);
  splice(ch, guest, () => {
    claim.release();
    app.sandboxes.streamClosed(id);
  });
}
