/**
 * The meaning of an egress list, checked before it is stored (the grammar is validate.ts's): an IPv4 rule
 * inside a private range is refused unless `CREATEOS_SANDBOX_PRIVATE_EGRESS` lists a CIDR containing it,
 * since the host firewall would refuse it anyway. The host daemon checks again against its own list.
 */
import { EgressRuleError, egressPolicy, normaliseCidr } from "@createos-sandbox/protocol/egress";

/** The operator's private-egress CIDRs (comma-separated; entries that are not IPv4 CIDRs are ignored). */
export function privateEgress(env: NodeJS.ProcessEnv = process.env): string[] {
  const list = (env.CREATEOS_SANDBOX_PRIVATE_EGRESS ?? "").split(",").map((s) => normaliseCidr(s.trim()));
  return list.filter((c): c is string => c !== undefined);
}

/** Why `rules` cannot be stored (the message names the rule), or undefined. */
export function egressRulesError(rules: readonly string[]): string | undefined {
  try {
    egressPolicy(rules, privateEgress());
    return undefined;
  } catch (e) {
    if (e instanceof EgressRuleError) return e.message;
    throw e;
  }
}
