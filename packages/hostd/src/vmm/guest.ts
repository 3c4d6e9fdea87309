/**
 * The guest side as the lifecycle code needs it: one agent connection per VM over the VM's virtio-serial
 * socket. A thin adapter over `AgentClient` (packages/hostd/src/agent/client.ts) so lifecycle code
 * depends on the few calls it makes, not on the client's whole surface.
 */
import type { Duplex, Readable } from "node:stream";
import {
  type ConfigureParams,
  type ExecEvents,
  type ExecRequest,
  type ExecResult,
  type FileStat,
  type HelloResult,
  HostdError,
  type PtyRequest,
  type PtySession,
} from "@createos-sandbox/protocol";
import { AgentClient, toHostdError } from "../agent/client.js";
import { rpcError } from "../agent/errors.js";

export interface AgentLike {
  hello(): Promise<void>;
  configure(p: {
    hostname: string;
    envs: Record<string, string>;
    time_ns: number;
    entropy: string;
  }): Promise<void>;
  sync(p: { time_ns: number; entropy: string }): Promise<void>;
  quiesce(): Promise<void>;
  /** Lifts a quiesce on the same session (the pause it prepared for was abandoned). */
  thaw(): Promise<void>;
  resizeFs(device: string): Promise<void>;
  exec(req: ExecRequest, events?: ExecEvents, signal?: AbortSignal): Promise<ExecResult>;
  openPty(req: PtyRequest): Promise<PtySession>;
  readFile(path: string): Promise<{ stat: FileStat; body: Readable }>;
  writeFile(path: string, body: Readable, mode?: number): Promise<{ bytes: number }>;
  connectTcp(port: number): Promise<Duplex>;
  onSelf(fn: (action: "pause" | "delete", reason?: string) => void): void;
  /** The agent broke the protocol (it overran a window): for the log. */
  onWarning(fn: (msg: string, fields: Record<string, unknown>) => void): void;
  close(): void;
}

/** Connects to the agent socket and waits until the agent answers `hello` (the readiness probe). */
export async function connectAgent(socketPath: string, timeoutMs: number): Promise<AgentLike> {
  return (await connectAgentWith(socketPath, timeoutMs)).agent;
}

/**
 * connectAgent whose hello carries `identity` (configure's fields, made per attempt): `configured` says
 * whether the agent applied it. An agent from before hello carried it (a stale image) answers without
 * saying so, and the caller then sends configure or sync itself.
 */
export async function connectAgentWith(
  socketPath: string,
  timeoutMs: number,
  identity?: () => ConfigureParams,
): Promise<{ agent: AgentLike; configured: boolean; configureUs?: number }> {
  const c = new AgentClient(socketPath);
  let hello: HelloResult;
  try {
    hello = await c.hello({ timeoutMs, identity });
  } catch (e) {
    c.close();
    throw new HostdError(
      "agent_unreachable",
      `the guest agent did not answer within ${timeoutMs} ms (${(e as Error).message}); see console.log in the VM dir`,
    );
  }
  if (hello.configured === false) {
    c.close();
    throw toHostdError(rpcError(hello.configure_error ?? { message: "configure failed" }));
  }
  const w = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (e) {
      throw toHostdError(e);
    }
  };
  const agent: AgentLike = {
    hello: async () => {
      await w(c.hello({ timeoutMs: 10_000 }));
    },
    configure: async (p) => {
      await w(c.configure(p));
    },
    sync: async (p) => {
      await w(c.sync(p));
    },
    quiesce: async () => {
      await w(c.quiesce());
    },
    thaw: async () => {
      await w(c.thaw());
    },
    resizeFs: async (device) => {
      await w(c.resizeFs(device));
    },
    exec: (req, events, signal) => w(c.exec(req, events, signal)),
    openPty: (req) => w(c.openPty(req)),
    readFile: (path) => w(c.readFile(path)),
    writeFile: (path, body, mode) => w(c.writeFile(path, body, mode)),
    connectTcp: (port) => w(c.connectTcp(port)),
    onSelf: (fn) => {
      c.on("self", (ev: { action?: unknown; reason?: unknown }) => {
        // The guest is not trusted: only the two actions, and a reason only when it is a string.
        if (ev.action !== "pause" && ev.action !== "delete") return;
        fn(ev.action, typeof ev.reason === "string" ? ev.reason : undefined);
      });
    },
    onWarning: (fn) => {
      c.on("warning", fn);
    },
    close: () => c.close(),
  };
  const us = Number(hello.configure_us);
  return { agent, configured: hello.configured === true, configureUs: Number.isFinite(us) ? us : undefined };
}
