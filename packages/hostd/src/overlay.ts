/**
 * A VM's private-network memberships (issue 12; the datapath is net/overlay.ts): in force before a new,
 * resumed or forked guest runs (`VmSpec.networks`), replaced live by `setNetworks`, kept in the VM record
 * and rebuilt on re-adoption, and released with the VM's namespace (pause, destroy, exit).
 */
import { createHash } from "node:crypto";
import { isIPv4 } from "node:net";
import type { OverlayEndpoint, OverlayMembership, VmSpec } from "@createos-sandbox/protocol";
import type { Host } from "./host.js";
import type { SlotAddrs } from "./net/index.js";
import { OverlayHost, applyMemberships, pruneNetworks, releaseMemberships } from "./net/overlay.js";
import { checkMemberships } from "./net/overlayplan.js";
import { type VmRecord, writeVmRecord } from "./records.js";

export const OVERLAY_ADDR_ENV = "CREATEOS_SANDBOX_OVERLAY_ADDR";
export const OVERLAY_PORT_ENV = "CREATEOS_SANDBOX_OVERLAY_PORT";

/** The VXLAN endpoint: `given`, else the settings, else 127.0.0.1:4789. A bad setting fails the open. */
export function overlayEndpoint(
  given?: OverlayEndpoint,
  env: NodeJS.ProcessEnv = process.env,
): OverlayEndpoint {
  const addr = given?.addr ?? (env[OVERLAY_ADDR_ENV] || "127.0.0.1");
  const port = given?.port ?? Number(env[OVERLAY_PORT_ENV] || 4789);
  if (!isIPv4(addr)) throw new Error(`${OVERLAY_ADDR_ENV} must be an IPv4 address, got ${addr}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`${OVERLAY_PORT_ENV} must be a UDP port, got ${env[OVERLAY_PORT_ENV]}`);
  return { addr, port };
}

const byHost = new WeakMap<Host, OverlayHost>();

/** A daemon's tag in the names of its overlay namespaces and root table: a hash of its layout root. */
export const overlayTag = (root: string): string =>
  createHash("sha256").update(root).digest("hex").slice(0, 8);

/** The daemon's overlay state; its tag is a hash of the data dir (stable across restarts, one per daemon). */
export function overlayOf(host: Host): OverlayHost {
  let o = byHost.get(host);
  if (!o) {
    o = new OverlayHost(overlayTag(host.layout.root), overlayEndpoint(host.opts.overlay));
    byHost.set(host, o);
  }
  return o;
}

/** Programs a VM being brought up (before its guest runs); the caller writes the record. */
export async function overlayOnBringUp(host: Host, rec: VmRecord, addrs: SlotAddrs, spec: VmSpec) {
  const list = checkMemberships(spec.networks ?? []);
  if (list.length === 0) return;
  await applyMemberships(overlayOf(host), addrs, list, rec.hostname);
  rec.networks = list;
}

export async function setNetworks(host: Host, sandboxId: string, networks: OverlayMembership[]) {
  const list = checkMemberships(networks);
  const vm = host.getVm(sandboxId);
  await host.withVmLock(vm, async () => {
    // A pause that got the lock first: the VM is no longer running here.
    host.getVm(sandboxId);
    await applyMemberships(overlayOf(host), vm.addrs, list, vm.rec.hostname);
    vm.rec.networks = list.length > 0 ? list : undefined;
    await writeVmRecord(vm.dir, vm.rec);
  });
}

/** Re-adoption: the namespace outlived the old daemon; whatever of the record's memberships is missing is rebuilt. */
export async function overlayOnReadopt(host: Host, rec: VmRecord, addrs: SlotAddrs): Promise<void> {
  if (!rec.networks?.length) return;
  await applyMemberships(overlayOf(host), addrs, checkMemberships(rec.networks), rec.hostname);
}

/** After re-adoption: networks no re-adopted VM is on lose their namespaces. */
export function overlayAfterReadopt(host: Host): Promise<void> {
  return pruneNetworks(overlayOf(host));
}

/** The slot's namespace is gone (and its veths with it): its networks lose the member. */
export function overlayReleased(host: Host, slot: number): Promise<void> {
  return releaseMemberships(overlayOf(host), slot);
}
