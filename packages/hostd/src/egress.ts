/**
 * A VM's network policy: its egress allowlist (net/egress.ts) and its bandwidth quota (net/meter.ts), put
 * in force before a new, resumed or forked guest runs and replaced live by `setEgress` / `setBandwidth`.
 * The allowlist is kept in the VM record for re-adoption; the meter lives in the namespace, which outlives
 * the daemon.
 */
import { HostdError, type NetUsage, type VmSpec } from "@createos-sandbox/protocol";
import { type EgressPolicy, EgressRuleError, egressPolicy } from "@createos-sandbox/protocol/egress";
import type { Host } from "./host.js";
import { dnsUpstreams } from "./net/dns.js";
import { type SlotAddrs, applyEgress, ensureRootNet } from "./net/index.js";
import { setQuota, takeUsage } from "./net/meter.js";
import { NameProxy } from "./net/proxy.js";
import { type VmRecord, writeVmRecord } from "./records.js";

/** The policy of `rules` under this host's private-egress list; a bad rule is `bad_request` naming it. */
export function hostPolicy(host: Host, rules: readonly string[] | undefined): EgressPolicy {
  try {
    return egressPolicy(rules, host.opts.privateEgress ?? []);
  } catch (e) {
    if (e instanceof EgressRuleError) throw new HostdError("bad_request", e.message);
    throw e;
  }
}

/** Checks a spec's rules before any work is done for it. */
export function checkSpecEgress(host: Host, spec: VmSpec): void {
  hostPolicy(host, spec.egress);
}

/** Applies the spec's policy to a VM being brought up and records its rules (the caller writes the record). */
export async function netOnBringUp(host: Host, rec: VmRecord, addrs: SlotAddrs, spec: VmSpec) {
  const policy = hostPolicy(host, spec.egress);
  // A pooled namespace meters without a quota (net/index.ts): nothing to do for an unmetered sandbox.
  const remaining = spec.bandwidth_remaining_bytes;
  if (remaining !== undefined && remaining >= 0) await setQuota(addrs.netns, remaining);
  // A pooled namespace comes with allow-all: nothing to do unless the sandbox has a list.
  if (policy.all && !rec.egress) return;
  await applyEgress(addrs, policy, host.nameProxy?.ports);
  record(rec, policy, spec.egress);
}

/** The record keeps the list as given (absent for allow-all). */
function record(rec: VmRecord, policy: EgressPolicy, rules: readonly string[] | undefined): void {
  rec.egress = policy.all ? undefined : [...(rules ?? [])];
}

export async function setEgress(host: Host, sandboxId: string, egress: string[]): Promise<void> {
  if (!Array.isArray(egress) || egress.some((r) => typeof r !== "string"))
    throw new HostdError("bad_request", "egress must be a list of rules");
  const policy = hostPolicy(host, egress);
  const vm = host.getVm(sandboxId);
  await host.withVmLock(vm, async () => {
    await applyEgress(vm.addrs, policy, host.nameProxy?.ports);
    record(vm.rec, policy, egress);
    await writeVmRecord(vm.dir, vm.rec);
  });
}

export async function takeNetUsage(host: Host, sandboxId: string): Promise<NetUsage> {
  return takeUsage(host.getVm(sandboxId).addrs.netns);
}

export async function setBandwidth(host: Host, sandboxId: string, remainingBytes: number): Promise<void> {
  if (typeof remainingBytes !== "number" || !Number.isFinite(remainingBytes))
    throw new HostdError("bad_request", "remaining bytes must be a number");
  await setQuota(host.getVm(sandboxId).addrs.netns, remainingBytes);
}

/** Starts the name proxy of this host's allowlists; without it, name rules on 80/443 match addresses only. */
export async function startNameProxy(host: Host): Promise<void> {
  let proxy: NameProxy | undefined;
  try {
    proxy = new NameProxy({
      policyOf: (slot) => {
        const vm = [...host.vms.values()].find((v) => v.rec.slot === slot && !v.gone);
        try {
          return vm ? hostPolicy(host, vm.rec.egress) : undefined;
        } catch {
          // rules this daemon's settings no longer accept: nothing goes through
          return undefined;
        }
      },
      privateEgress: host.opts.privateEgress ?? [],
      upstreams: dnsUpstreams().map((u) => `${u.ip}:${u.port}`),
    });
    await ensureRootNet(host.netPool.fw);
    await proxy.start();
    host.nameProxy = proxy;
  } catch (e) {
    await proxy?.close();
    host.log.warn("no name proxy: HTTP/TLS name rules match addresses only", { error: String(e) });
  }
}
