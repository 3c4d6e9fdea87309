/**
 * Guest I/O: exec, shells, files and TCP go straight to the VM's agent. Each marks the sandbox active (at
 * the start, and at the end of the long-running ones) so the control plane's idle timer sees the use.
 */
import type { Duplex, Readable } from "node:stream";
import type {
  ExecEvents,
  ExecRequest,
  ExecResult,
  FileStat,
  PtyRequest,
  PtySession,
} from "@createos-sandbox/protocol";
import type { Host } from "./host.js";
import type { AgentLike } from "./vmm/guest.js";

export class GuestIo {
  constructor(private readonly host: Host) {}

  /** The running VM's agent, with the sandbox marked active. */
  private agent(id: string): AgentLike {
    const vm = this.host.getVm(id);
    this.activity(id);
    return vm.agent;
  }

  private activity(id: string): void {
    this.host.emit({ type: "activity", sandbox_id: id });
  }

  /** Runs a call that lasts (exec, upload) and marks the sandbox active again when it ends. */
  private async lasting<T>(id: string, use: (agent: AgentLike) => Promise<T>): Promise<T> {
    const agent = this.agent(id);
    try {
      return await use(agent);
    } finally {
      this.activity(id);
    }
  }

  exec(id: string, req: ExecRequest, events?: ExecEvents, signal?: AbortSignal): Promise<ExecResult> {
    return this.lasting(id, (a) => a.exec(req, events, signal));
  }

  async openPty(id: string, req: PtyRequest): Promise<PtySession> {
    return this.agent(id).openPty(req);
  }

  async readFile(id: string, path: string): Promise<{ stat: FileStat; body: Readable }> {
    return this.agent(id).readFile(path);
  }

  writeFile(id: string, path: string, body: Readable, mode?: number): Promise<{ bytes: number }> {
    return this.lasting(id, (a) => a.writeFile(path, body, mode));
  }

  async connectTcp(id: string, port: number): Promise<Duplex> {
    return this.agent(id).connectTcp(port);
  }
}
