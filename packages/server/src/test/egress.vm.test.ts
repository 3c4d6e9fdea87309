/**
 * Egress and bandwidth end to end, through the published SDK against a real control plane with its engine:
 * a sandbox created with an allowlist reaches exactly that on a test host in a network namespace
 * (10.81.<n>.0/29, listed as private egress; an upload sink on 9100, a web server on 80, a DNS server);
 * its quota (CREATEOS_SANDBOX_BANDWIDTH_QUOTA_BYTES = 1 MiB) is exhausted by a real upload, `capped` flips,
 * exec still works, a recharge restores traffic; the ledger and the rules survive pause + resume and a
 * restart of the control plane.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/server/dist/test/egress.vm.test.js
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  dnsServerPy,
  freeOctet,
  sinkPy,
  testHostNs,
  uploadPy,
  webServerPy,
} from "@createos-sandbox/hostd/net/testhosts";
import { PROBE_PY, parseProbe } from "@createos-sandbox/hostd/net/testprobe";
import { CreateosSandboxClient, type Sandbox } from "@nodeops-createos/sandbox";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, cleanup } from "./helpers.js";

const n = freeOctet(["10.81"]);
const GW = `10.81.${n}.1`;
const A = `10.81.${n}.2`;
const DNS = `10.81.${n}.4`;
const NS = `csbt-se${process.pid}`;
const VETH = `csbts${process.pid}`;
const ENV = {
  CREATEOS_SANDBOX_PRIVATE_EGRESS: `10.81.${n}.0/29`,
  CREATEOS_SANDBOX_DNS_SERVERS: DNS,
  CREATEOS_SANDBOX_BANDWIDTH_QUOTA_BYTES: String(1 << 20),
  CREATEOS_SANDBOX_RATE_LIMIT_RPS: "0",
};
let down: (() => void) | undefined;
let s: ServerProc | undefined;
let sb: Sandbox;

const client = () => new CreateosSandboxClient({ apiKey: s!.adminKey, baseUrl: s!.url, retry: false });

async function py(code: string, ...args: string[]): Promise<string> {
  const r = await sb.runCommand("python3", ["-c", code, ...args]);
  return r.result.stdout;
}

/** The probe's outcome per target (`open`, `errno:…`, `timeout`). */
async function probe(...targets: string[]): Promise<string[]> {
  return parseProbe(await py(PROBE_PY, ...targets)).map((r) => r.outcome);
}

before(async () => {
  const programs = [sinkPy(9100), webServerPy(80), dnsServerPy(DNS, { "web-a.test": A })];
  down = testHostNs(NS, VETH, GW, [A, DNS], programs);
  s = await startEngineServer(ENV);
  sb = await client().createSandbox({ shape: "s-1vcpu-256mb", egress: [`${A}:9100`] });
});

after(async () => {
  if (s) await destroyAll(s, [s.adminKey]);
  await s?.stop();
  if (s) cleanup(s.dataDir);
  down?.();
});

test("create-time rules are enforced; PUT changes them live", { timeout: 300_000 }, async () => {
  assert.deepEqual(await probe(`tcp:${A}:9100`, `tcp:${A}:80`), ["open", "errno:ECONNREFUSED"]);
  assert.deepEqual((await sb.setEgress(["web-a.test", `${A}:9100`])).egress, ["web-a.test", `${A}:9100`]);
  assert.deepEqual(await probe("tcp:web-a.test:80", `tcp:${A}:9100`), ["open", "open"]);
  const nx = await sb.runCommand("getent", ["hosts", "other.test"]);
  assert.equal(nx.result.exit_code, 2, "a name not on the list is NXDOMAIN");
  await sb.setEgress([`${A}:9100`]);
});

test(
  "the quota: an upload exhausts it, capped flips, exec still works, a recharge restores traffic",
  {
    timeout: 300_000,
  },
  async () => {
    assert.match(await py(uploadPy(A, 9100, 4 << 20)), /^stalled sent=/m);
    const bw = await sb.getBandwidth();
    assert.equal(bw.quota_bytes, 1 << 20);
    assert.equal(bw.capped, true, JSON.stringify(bw));
    assert.ok(bw.used_bytes >= 1 << 20, JSON.stringify(bw));
    assert.deepEqual(await probe(`tcp:${A}:9100`), ["timeout"], "outside traffic stops");
    assert.equal((await sb.runCommand("echo", ["still-here"])).result.stdout.trim(), "still-here");
    const after = await sb.rechargeBandwidth(64 << 20);
    assert.equal(after.capped, false);
    assert.equal(after.quota_bytes, (1 << 20) + (64 << 20));
    assert.match(await py(uploadPy(A, 9100, 4 << 20)), /^done sent=4194304/m);
  },
);

test(
  "the ledger and the rules survive pause + resume and a control-plane restart",
  { timeout: 600_000 },
  async () => {
    const before = (await sb.getBandwidth()).used_bytes;
    await sb.pause();
    await sb.waitUntilPaused({ timeoutMs: 120_000 });
    await sb.resume();
    await sb.waitUntilRunning({ timeoutMs: 120_000 });
    assert.ok((await sb.getBandwidth()).used_bytes >= before);
    assert.deepEqual(await probe(`tcp:${A}:9100`, `tcp:${A}:80`), ["open", "errno:ECONNREFUSED"]);
    const dataDir = s!.dataDir;
    const used = (await sb.getBandwidth()).used_bytes;
    await s!.stop();
    s = await startEngineServer(ENV, dataDir);
    sb = await client().getSandbox(sb.id);
    const bw = await sb.getBandwidth();
    assert.ok(bw.used_bytes >= used, `${bw.used_bytes} < ${used}`);
    assert.equal(bw.quota_bytes, (1 << 20) + (64 << 20));
    assert.deepEqual((await sb.getEgress()).egress, [`${A}:9100`]);
    assert.deepEqual(await probe(`tcp:${A}:80`), ["errno:ECONNREFUSED"]);
  },
);
