/**
 * Local port forward (protocol.md §3.6): a loopback `net.Server` that opens one upgraded
 * `POST …/tunnel/{port}` connection per accepted connection and relays bytes both ways, keeping
 * each direction open until its own FIN (SSH handshakes depend on half-close).
 */
import net from "node:net";
import { CreateosSandboxError } from "./errors.js";
import type { Tunnel, TunnelOptions } from "./types.js";

export function assertValidPort(port: number, what = "port"): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CreateosSandboxError(`Invalid ${what}: ${port}. Must be an integer in 1-65535.`);
  }
}

/** Relays two sockets with half-close; resolves once both are closed. */
export function relay(a: net.Socket, b: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    let closedCount = 0;
    const onClose = () => {
      closedCount++;
      if (closedCount === 2) resolve();
    };
    // Any error tears down both: a half-dead relay would hang the peer.
    const kill = () => {
      a.destroy();
      b.destroy();
    };
    a.on("error", kill);
    b.on("error", kill);
    a.on("close", onClose);
    b.on("close", onClose);
    // pipe() ends the destination when the source ends, i.e. forwards FIN; with allowHalfOpen the
    // other direction keeps flowing until its own end.
    a.pipe(b);
    b.pipe(a);
    // Once both directions are finished, make sure neither socket lingers.
    let ended = 0;
    const onEnd = () => {
      ended++;
      if (ended === 2) {
        setImmediate(() => {
          if (a.writableFinished) a.destroy();
          if (b.writableFinished) b.destroy();
        });
      }
    };
    a.on("end", onEnd);
    b.on("end", onEnd);
  });
}

export function startTunnel(
  openRemote: () => Promise<net.Socket>,
  options: TunnelOptions = {},
): Promise<Tunnel> {
  const host = options.bind ?? "127.0.0.1";
  const localPort = options.localPort ?? 0;
  if (localPort !== 0) assertValidPort(localPort, "localPort");
  const active = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => {
    active.add(local);
    local.on("close", () => active.delete(local));
    local.on("error", () => undefined);
    openRemote().then(
      (remote) => {
        if (local.destroyed) {
          remote.destroy();
          return;
        }
        active.add(remote);
        remote.on("close", () => active.delete(remote));
        void relay(local, remote);
        local.resume();
        remote.resume();
      },
      (err: unknown) => {
        local.destroy();
        options.onError?.(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(localPort, host, () => {
      server.removeListener("error", reject);
      const addr = server.address();
      const port = typeof addr === "object" && addr ? addr.port : localPort;
      let closing: Promise<void> | undefined;
      const tunnel: Tunnel = {
        port,
        host,
        close() {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const s of active) s.destroy();
          });
          return closing;
        },
      };
      options.signal?.addEventListener("abort", () => void tunnel.close(), { once: true });
      resolve(tunnel);
    });
  });
}
