/**
 * The egress allowlist of a VM (net/egress.ts enforces it): put in force before a new, resumed or forked
 * guest runs, replaced live by `setEgress`, kept in the VM record for re-adoption.
 */
import { HostdError, type NetStats, type VmSpec } from "@createos-sandbox/protocol";
import { type EgressPolicy, EgressRuleError, egressPolicy } from "@createos-sandbox/protocol/egress";
import type { Host } from "./host.js";
import { EGRESS_TABLE } from "./net/egress.js";
import { type SlotAddrs, applyEgress } from "./net/index.js";
import { type VmRecord, writeVmRecord } from "./records.js";
import { nftCmd } from "./sys/index.js";

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

/** Applies the spec's rules to a VM being brought up and records them (the caller writes the record). */
export async function egressOnBringUp(host: Host, rec: VmRecord, addrs: SlotAddrs, spec: VmSpec) {
  const policy = hostPolicy(host, spec.egress);
  // A pooled namespace comes with allow-all: nothing to do unless the sandbox has a list.
  if (policy.all && !rec.egress) return;
  await applyEgress(addrs, policy);
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
    await applyEgress(vm.addrs, policy);
    record(vm.rec, policy, egress);
    await writeVmRecord(vm.dir, vm.rec);
  });
}

export async function netStats(host: Host, sandboxId: string): Promise<NetStats> {
  const vm = host.getVm(sandboxId);
  const out = await nftCmd(["list", "counter", "inet", EGRESS_TABLE, "denied"], vm.addrs.netns).catch(() => ({
    stdout: "",
  }));
  return { denied_packets: Number(/packets (\d+)/.exec(out.stdout)?.[1] ?? 0) };
}
