/**
 * The SSH gateway (protocol.md §3.7), its own listener (CREATEOS_SANDBOX_SSH_LISTEN), on the `ssh2`
 * library: public-key logins for a sandbox (auth.ts), session channels into it (session.ts), and
 * `direct-tcpip` channels to `127.0.0.1:<port>` inside it through the host daemon's tunnel, so
 * `ssh -J <id>@gateway root@sandbox` (the guest's own sshd, sshd.ts) and `ssh -L` work. The destination
 * host of a `direct-tcpip` request is not looked at: a login is for one sandbox, and its loopback is where
 * every forward lands.
 */
import { type AddressInfo, type Server as NetServer, type Socket, createServer } from "node:net";
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
  server: NetServer;
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * The gateway's TCP listener is ours, and each socket is handed to ssh2 (`injectSocket`) only after the
 * checks that must not wait for a handshake: an address whose failed logins used up its bucket, or that
 * holds its share of connections (CREATEOS_SANDBOX_MAX_CONNECTIONS_PER_IP), is disconnected at once, and
 * a connection that has not logged in within the grace time is closed, whether or not it said anything.
 */
export async function startGateway(app: App, spec: string): Promise<GatewayServer> {
  const { cfg, log } = app;
  const { host, port } = parseListen(spec, "CREATEOS_SANDBOX_SSH_LISTEN");
  const hostKey = await loadHostKey(cfg.dataDir);
  const failures = new LoginFailures(cfg.authFailPerSecond, cfg.authFailBurst);
  /** Grace timers by the client's `address:port`, cleared at login. */
  const grace = new Map<string, NodeJS.Timeout>();
  const perAddr = new Map<string, number>();
  const sockets = new Set<Socket>();
  const ssh = new ssh2.Server(
    { hostKeys: [hostKey], ident: "createos-sandbox", keepaliveInterval: 15_000, keepaliveCountMax: 4 },
    (conn, info) => {
      const peer = `${info.ip}:${info.port}`;
      onConnection(app, failures, conn, clientAddress({ remoteAddress: info.ip }), () => {
        clearTimeout(grace.get(peer));
        grace.delete(peer);
      });
    },
  );
  const server = createServer((sock) => {
    const addr = clientAddress(sock);
    const wait = failures.blocked(addr);
    const held = perAddr.get(addr) ?? 0;
    const capped = cfg.maxConnectionsPerIp > 0 && held >= cfg.maxConnectionsPerIp;
    if (wait > 0 || capped) {
      const reason = capped ? "too many connections" : `too many failed logins; retry in ${wait} s`;
      log.warn("ssh refused", { addr, reason });
      sock.destroy();
      return;
    }
    perAddr.set(addr, held + 1);
    sockets.add(sock);
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    grace.set(
      peer,
      setTimeout(() => {
        log.info("ssh refused", { addr, reason: "no login within the grace time" });
        sock.destroy();
      }, cfg.sshLoginGraceMs),
    );
    sock.once("close", () => {
      sockets.delete(sock);
      clearTimeout(grace.get(peer));
      grace.delete(peer);
      const left = (perAddr.get(addr) ?? 1) - 1;
      if (left <= 0) perAddr.delete(addr);
      else perAddr.set(addr, left);
    });
    ssh.injectSocket(sock);
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
        for (const s of sockets) s.destroy();
      }),
  };
}

function onConnection(
  app: App,
  failures: LoginFailures,
  conn: Connection,
  addr: string,
  loggedIn: () => void,
): void {
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
        // A listed key only asked about: "acceptable" (PK_OK), not a login — the grace timer runs on.
        if (ok === PROBE_OK) {
          ctx.accept();
          return;
        }
        if (typeof ok === "string") {
          sandboxId = ok;
          who = `${ctx.username}@${addr}`;
          loggedIn();
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

/** What {@link authenticate} answers to a listed key offered without a signature. */
const PROBE_OK = Symbol("acceptable");

/**
 * The sandbox id this attempt logs into, or why not. A key offered without a signature is only asked
 * about (OpenSSH probes before signing): it is answered "acceptable" when listed, nothing more — anyone
 * may hold a public key, so only a signature makes a login.
 */
async function authenticate(
  app: App,
  ctx: AuthContext,
): Promise<string | typeof PROBE_OK | { refused: string }> {
  if (ctx.method !== "publickey") return { refused: "" };
  const hit = await resolveLogin(app.store, ctx.username, ctx.key.data);
  if ("refused" in hit) return hit;
  if (!ctx.signature || !ctx.blob) return PROBE_OK;
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
