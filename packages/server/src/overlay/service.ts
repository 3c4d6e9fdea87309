/**
 * Private networks in the control plane (issue 12): who is a member of what (store/networks.ts), and what
 * each running member's host is told — the member's whole set of `OverlayMembership`s, declaratively, with
 * every peer's address and name and the VXLAN endpoints of the other hosts with members.
 *
 * When it is told: a sandbox being created, resumed or forked gets its set in `VmSpec.networks` (in force
 * before the guest runs) and is told again once running if the set changed meanwhile; whenever a network's
 * members change (join, leave, destroy) every running member of it is told its new set. A member whose host
 * cannot be told now (down, restarting) is told again when its host is reconciled (`repushHost`), which
 * also repairs a control plane that crashed between recording a change and telling the hosts.
 */
import type { OverlayEndpoint, OverlayMembership, VmSpec } from "@createos-sandbox/protocol";
import { apiError } from "@createos-sandbox/protocol";
import type { ServerConfig } from "../config.js";
import type { Hosts } from "../hosts.js";
import type { Logger } from "../log.js";
import { vmSpec } from "../rows.js";
import { type MemberRow, NetworkStore } from "../store/networks.js";
import type { SandboxRow, Store } from "../store/types.js";
import { MEMBERS_PER_NETWORK, type OverlayPool, parsePool } from "./alloc.js";

const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).slice(0, 300);

export class Overlay {
  readonly nets: NetworkStore;
  readonly pool: OverlayPool;
  /** Per sandbox, the tail of its queue of host updates: one at a time, each computed when it runs. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(
    dbPath: string,
    cfg: Pick<ServerConfig, "overlayCidr">,
    private readonly store: Store,
    private readonly hosts: Hosts,
    private readonly log: Logger,
  ) {
    this.pool = parsePool(cfg.overlayCidr);
    this.nets = NetworkStore.open(dbPath, this.pool);
  }

  close(): void {
    this.nets.close();
  }

  /** A host's VXLAN endpoint, once it reported one (`HostInfo.overlay_endpoint`). */
  private endpointOf(hostId: string | undefined): OverlayEndpoint | undefined {
    const all = this.hosts.all();
    const h = hostId ? all.find((r) => r.id === hostId) : all.length === 1 ? all[0] : undefined;
    return h?.info?.overlay_endpoint;
  }

  /** The sandbox's memberships as its host is to program them (`without`: minus that network). */
  membershipsOf(row: Pick<SandboxRow, "id" | "host_id">, without?: string): OverlayMembership[] {
    const out: OverlayMembership[] = [];
    const mine = this.endpointOf(row.host_id);
    for (const netId of this.nets.networksOf(row.id)) {
      if (netId === without) continue;
      const net = this.nets.byId(netId);
      if (!net) continue;
      const members = this.nets.members(netId);
      const me = members.find((m) => m.sandbox_id === row.id);
      if (!me) continue;
      const others = members.filter((m) => m.sandbox_id !== row.id);
      const remotes = new Map<string, OverlayEndpoint>();
      for (const m of others) {
        const ep = m.host_id === row.host_id ? undefined : this.endpointOf(m.host_id);
        if (ep && !(mine && ep.addr === mine.addr && ep.port === mine.port))
          remotes.set(`${ep.addr}:${ep.port}`, { addr: ep.addr, port: ep.port });
      }
      out.push({
        network_id: net.id,
        network_name: net.name,
        vni: net.vni,
        cidr: net.cidr,
        ip: me.ip,
        peers: others.map((m) => ({ sandbox_id: m.sandbox_id, name: m.name, ip: m.ip })),
        remotes: [...remotes.values()],
      });
    }
    return out;
  }

  /** Runs `fn` after the sandbox's earlier host updates. */
  private queued<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.queues.get(id) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return next;
  }

  /**
   * Tells a running sandbox's host its current set (`without`: minus that network) and records the
   * memberships as programmed. Not running: nothing to tell (its next create/resume/fork carries the set).
   * Rejects with the host's error.
   */
  push(id: string, without?: string): Promise<void> {
    return this.queued(id, async () => {
      const row = await this.store.getSandbox(id);
      if (row?.status !== "running") return;
      const set = this.membershipsOf(row, without);
      await this.hosts.daemonOf(row.host_id).setNetworks(id, set);
      this.nets.setProgrammed(
        id,
        set.map((m) => m.network_id),
      );
    });
  }

  /** push(), a failure logged: the member's host is told again when it is reconciled. */
  private async pushQuietly(id: string, why: string): Promise<void> {
    await this.push(id).catch((e) =>
      this.log.warn("private networks not updated on the host yet", { sandbox_id: id, why, err: errText(e) }),
    );
  }

  /** Tells every running member of these networks (but `except`) its new set. */
  async changed(networkIds: readonly string[], except?: string): Promise<void> {
    const ids = new Set<string>();
    for (const n of networkIds) for (const m of this.nets.members(n)) ids.add(m.sandbox_id);
    if (except) ids.delete(except);
    await Promise.all([...ids].map((id) => this.pushQuietly(id, "a network's members changed")));
  }

  /** A new sandbox (create, fork) joins these networks; its peers are told. Refuses a full network. */
  async joinAtStart(sandboxId: string, networkIds: readonly string[]): Promise<void> {
    for (const n of networkIds) this.joinOne(n, sandboxId);
    await this.changed(networkIds, sandboxId);
  }

  /** True when the sandbox was not a member yet. */
  private joinOne(networkId: string, sandboxId: string): boolean {
    const r = this.nets.join(networkId, sandboxId);
    if (r.ok) return r.joined;
    if (r.why === "no_subnet") throw apiError("overlay_pool_exhausted", { pool: this.pool.cidr });
    const net = this.nets.byId(networkId);
    throw apiError("limit_network_members", {
      id: networkId,
      cidr: net?.cidr ?? "",
      limit: MEMBERS_PER_NETWORK,
    });
  }

  /** What the host is asked to run for a row, private networks included (in force before the guest runs). */
  vmSpec(row: SandboxRow): VmSpec {
    const networks = this.membershipsOf(row);
    return networks.length ? { ...vmSpec(row), networks } : vmSpec(row);
  }

  /**
   * The VM runs with `given` in force: those memberships are programmed; if the set changed while it
   * started (a peer joined or left), its host is told the new one.
   */
  async started(id: string, given: readonly OverlayMembership[]): Promise<void> {
    this.nets.setProgrammed(
      id,
      given.map((m) => m.network_id),
    );
    const row = await this.store.getSandbox(id);
    if (!row) return;
    if (JSON.stringify(this.membershipsOf(row)) !== JSON.stringify(given))
      await this.pushQuietly(id, "its networks changed while it started");
  }

  /** Live attach of a running sandbox: recorded, put in force on its host, then its peers are told. */
  async attach(row: SandboxRow, net: { id: string }): Promise<void> {
    const joined = this.joinOne(net.id, row.id);
    try {
      await this.push(row.id);
    } catch (e) {
      // Not in force: a new membership is taken back, on the host too (best effort).
      if (joined) {
        this.nets.leave(net.id, row.id);
        await this.pushQuietly(row.id, "rolling back a refused attach");
      }
      throw e;
    }
    await this.changed([net.id], row.id);
  }

  /**
   * Detach: cut on the host first (a crash before the row goes leaves the membership recorded, and the
   * host is told it again on reconcile), then forgotten, then the peers are told — and the sandbox's host
   * once more, from the rows: an update queued between the cut and the forgetting had the network in it.
   */
  async detach(row: SandboxRow, networkId: string): Promise<void> {
    await this.push(row.id, networkId);
    this.nets.leave(networkId, row.id);
    await Promise.all([this.pushQuietly(row.id, "detached"), this.changed([networkId])]);
  }

  /** A sandbox on its way out leaves every network; the peers are told. */
  async leaveAll(id: string): Promise<void> {
    const nets = this.nets.networksOf(id);
    for (const n of nets) this.nets.leave(n, id);
    if (nets.length) await this.changed(nets);
  }

  /** The network's members as the API lists them. */
  members(networkId: string): MemberRow[] {
    return this.nets.members(networkId);
  }

  /**
   * A host was attached or answers again: its running members are told their sets, and so are the members
   * on other hosts that share a network with them (the host's endpoint may be new).
   */
  async repushHost(hostId: string): Promise<void> {
    const here = new Set(this.nets.runningMembers(hostId));
    const nets = new Set<string>();
    for (const id of here) for (const n of this.nets.networksOf(id)) nets.add(n);
    const all = new Set(here);
    for (const n of nets)
      for (const m of this.nets.members(n)) if (m.status === "running") all.add(m.sandbox_id);
    await Promise.all([...all].map((id) => this.pushQuietly(id, "its host was reconciled")));
  }
}
