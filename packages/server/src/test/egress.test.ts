/**
 * The egress and bandwidth routes over a scripted host daemon: rules are validated (every form; private ranges only when
 * CREATEOS_SANDBOX_PRIVATE_EGRESS lists them; 400 naming the rule), put in force on the host when the VM
 * runs (setEgress) before they are stored, and passed to the host on resume. Enforcement itself is
 * packages/hostd/src/net/egress.vm.test.ts, on a real VM.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { attachReady, call } from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KEY = `skp_${"e".repeat(32)}`;

describe("egress and bandwidth routes", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-egress-"));
  const daemon = new ScriptedDaemon();
  let srv: RunningServer;
  let id = "";

  const put = (egress: unknown) =>
    call(srv.url, "PUT", `/v1/sandboxes/${id}/egress`, { key: KEY, body: { egress } });
  const setCalls = () => daemon.calls.filter((c) => c.method === "setEgress").map((c) => c.args);

  before(async () => {
    // Each test file runs in its own process: the setting stays this file's.
    process.env.CREATEOS_SANDBOX_PRIVATE_EGRESS = "10.77.0.0/16";
    process.env.CREATEOS_SANDBOX_BANDWIDTH_QUOTA_BYTES = "1000000";
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    await store.addApiKey((await store.createUser("erin")).id, KEY);
    srv = await startServer(
      loadConfig({ dataDir, port: 0 }, {}),
      createLogger(() => undefined),
      store,
    );
    await attachReady(srv, daemon);
    const r = await call(srv.url, "POST", "/v1/sandboxes", {
      key: KEY,
      body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", egress: ["pypi.org", "10.77.1.2:80"] },
    });
    assert.equal(r.status, 200, r.text);
    id = r.json.data.id;
    assert.deepEqual(daemon.vms.get(id)?.egress, ["pypi.org", "10.77.1.2:80"], "create passes the rules");
    assert.equal(daemon.vms.get(id)?.bandwidth_remaining_bytes, 1_000_000, "and the quota");
  });
  after(async () => {
    await srv.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("PUT on a running sandbox: in force on the host, then stored; GET reads it back", async () => {
    const rules = [
      "pypi.org",
      "*.github.com",
      "db.example.com:5432",
      "8.8.8.8",
      "8.8.8.8:53",
      "1.1.0.0/16",
      "1.1.0.0/16:443",
    ];
    const r = await put(rules);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.data, { id, egress: rules });
    assert.deepEqual(setCalls().at(-1), [id, rules]);
    const g = await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY });
    assert.deepEqual(g.json.data, { id, egress: rules, denied_packets: 0, recent_denied: [] });
    // `["*"]`, `[]` and null all allow everything, stored as []
    for (const all of [["*"], [], null]) {
      const a = await put(all);
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(a.json.data.egress, []);
      assert.deepEqual(setCalls().at(-1), [id, []]);
    }
  });

  test("a bad rule is a 400 naming it, and changes nothing", async () => {
    await put(["pypi.org"]);
    const before = setCalls().length;
    for (const [rules, re] of [
      [["pypi.org", "10.1.2.3"], /"10\.1\.2\.3".*CREATEOS_SANDBOX_PRIVATE_EGRESS/],
      [["192.168.0.0/16:80"], /"192\.168\.0\.0\/16:80"/],
      [["pypi.org:99999"], /pypi\.org:99999/],
      [["not a host"], /not a host/],
    ] as const) {
      const r = await put(rules);
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.data.egress, re);
    }
    assert.equal(setCalls().length, before, "the host was not asked");
    const g = await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY });
    assert.deepEqual(g.json.data.egress, ["pypi.org"]);
    const c = await call(srv.url, "POST", "/v1/sandboxes", {
      key: KEY,
      body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", egress: ["169.254.169.254"] },
    });
    assert.equal(c.status, 400, c.text);
    assert.match(c.json.data.egress, /169\.254\.169\.254/);
  });

  test("the host refusing a rule is a 400 and the stored rules stay", async () => {
    const orig = daemon.setEgress.bind(daemon);
    daemon.setEgress = async () => {
      const { HostdError } = await import("@createos-sandbox/protocol");
      throw new HostdError("bad_request", 'invalid egress rule "10.77.1.1": not private egress on this host');
    };
    try {
      const r = await put(["10.77.1.1"]);
      assert.equal(r.status, 400, r.text);
    } finally {
      daemon.setEgress = orig;
    }
    const g = await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY });
    assert.deepEqual(g.json.data.egress, ["pypi.org"]);
  });

  test("bandwidth: the host's counts fold into the ledger; capped past the quota; a recharge lifts the host's cap", async () => {
    const bw = () => call(srv.url, "GET", `/v1/sandboxes/${id}/bandwidth`, { key: KEY });
    daemon.usage.set(id, { egress_bytes: 600_000, ingress_bytes: 5_000, denied_packets: 3 });
    assert.deepEqual((await bw()).json.data, {
      id,
      quota_bytes: 1_000_000,
      used_bytes: 600_000,
      ingress_bytes: 5_000,
      remaining_bytes: 400_000,
      capped: false,
    });
    const eg = await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY });
    assert.equal(eg.json.data.denied_packets, 3);
    // taken once: a second read adds nothing
    assert.equal((await bw()).json.data.used_bytes, 600_000);
    // the host stopped the guest a little short of the quota (its last packet was dropped whole)
    daemon.usage.set(id, { egress_bytes: 399_000, ingress_bytes: 0, denied_packets: 0, capped: true });
    const stopped = (await bw()).json.data;
    assert.equal(stopped.capped, true);
    assert.equal(stopped.used_bytes, 1_000_000);
    daemon.usage.set(id, { egress_bytes: 100, ingress_bytes: 0, denied_packets: 0 });
    const capped = (await bw()).json.data;
    assert.equal(capped.capped, true);
    assert.equal(capped.remaining_bytes, -100);
    const r = await call(srv.url, "POST", `/v1/sandboxes/${id}/bandwidth/recharge`, {
      key: KEY,
      body: { add_bytes: 1_000_000 },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.quota_bytes, 2_000_000);
    assert.equal(r.json.data.capped, false);
    const set = daemon.calls.filter((c) => c.method === "setBandwidth").at(-1);
    assert.deepEqual(set?.args, [id, 2_000_000 - 1_000_100]);
    const bad = await call(srv.url, "POST", "/v1/sandboxes", {
      key: KEY,
      body: { shape: "s-1vcpu-256mb", rootfs: "debian:12", bandwidth_quota_bytes: 5 },
    });
    assert.equal(bad.status, 400, bad.text);
  });

  test("GET egress folds first: recent_denied as the host lists it, counts per sandbox in Prometheus", async () => {
    const egress = async () =>
      (await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY })).json.data;
    const before = (await egress()).denied_packets;
    const refused = [
      { ip: "203.0.113.9", proto: "tcp", port: 22, expires_in_s: 599 },
      { ip: "203.0.113.7", proto: "icmp", port: 0, expires_in_s: 300 },
    ];
    daemon.recentDenied.set(id, refused);
    daemon.usage.set(id, { egress_bytes: 0, ingress_bytes: 70, denied_packets: 2 });
    const eg = await egress();
    assert.equal(eg.denied_packets, before + 2);
    assert.deepEqual(eg.recent_denied, refused);
    // what the host said, aged: five minutes on, the ICMP refusal has run out (the read above took < 2 s)
    const aged = srv.app.sandboxes.net.recentDenied(id, Date.now() + 300_000);
    assert.deepEqual(
      aged.map((d) => ({ ...d, expires_in_s: 0 })),
      [{ ...refused[0], expires_in_s: 0 }],
    );
    assert.ok(
      (aged[0]?.expires_in_s ?? 0) >= 297 && (aged[0]?.expires_in_s ?? 0) <= 299,
      JSON.stringify(aged),
    );
    const text = await srv.app.metrics.registry.metrics();
    const series = (name: string) =>
      text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`sandbox_id="${id}"`));
    assert.equal(
      series("createos_sandbox_egress_denied_packets_total"),
      `createos_sandbox_egress_denied_packets_total{sandbox_id="${id}"} ${before + 2}`,
    );
    assert.ok(
      text.includes(`createos_sandbox_network_bytes_total{sandbox_id="${id}",direction="ingress"} 5070`),
      text,
    );
    daemon.recentDenied.delete(id);
  });

  test("paused: stored only, and the resume passes them to the host", async () => {
    // counted after the last read: folded in before the pause takes the namespace away
    daemon.usage.set(id, { egress_bytes: 500, ingress_bytes: 0, denied_packets: 0 });
    assert.equal((await call(srv.url, "POST", `/v1/sandboxes/${id}/pause`, { key: KEY })).status, 202);
    for (let i = 0; i < 100; i++) {
      const g = await call(srv.url, "GET", `/v1/sandboxes/${id}`, { key: KEY });
      if (g.json.data.status === "paused") break;
      await sleep(50);
    }
    const before = setCalls().length;
    assert.equal((await put(["github.com:22"])).status, 200);
    assert.equal(setCalls().length, before, "no VM to set them on");
    assert.equal((await call(srv.url, "POST", `/v1/sandboxes/${id}/resume`, { key: KEY })).status, 202);
    for (let i = 0; i < 100 && daemon.vms.get(id) === undefined; i++) await sleep(50);
    assert.deepEqual(daemon.vms.get(id)?.egress, ["github.com:22"]);
    // the ledger went along: the host is told what is left
    assert.equal(daemon.vms.get(id)?.bandwidth_remaining_bytes, 2_000_000 - 1_000_600);
  });

  test("a restarted control plane keeps the ledger", async () => {
    await srv.close();
    srv = await startServer(
      loadConfig({ dataDir, port: 0 }, {}),
      createLogger(() => undefined),
      SqliteStore.open(join(dataDir, "db.sqlite")),
    );
    await attachReady(srv, daemon);
    const bw = await call(srv.url, "GET", `/v1/sandboxes/${id}/bandwidth`, { key: KEY });
    assert.equal(bw.status, 200, bw.text);
    assert.equal(bw.json.data.used_bytes, 1_000_600);
    assert.equal(bw.json.data.quota_bytes, 2_000_000);
  });

  test("a destroyed sandbox's Prometheus series are removed", async () => {
    daemon.usage.set(id, { egress_bytes: 10, ingress_bytes: 0, denied_packets: 1 });
    await call(srv.url, "GET", `/v1/sandboxes/${id}/egress`, { key: KEY });
    const mine = async () =>
      (await srv.app.metrics.registry.metrics()).split("\n").filter((l) => l.includes(`sandbox_id="${id}"`));
    assert.equal((await mine()).length, 2, "denied packets and egress bytes");
    assert.equal((await call(srv.url, "DELETE", `/v1/sandboxes/${id}`, { key: KEY })).status, 200);
    for (let i = 0; i < 100 && daemon.vms.has(id); i++) await sleep(50);
    for (let i = 0; i < 100 && (await mine()).length > 0; i++) await sleep(50);
    assert.deepEqual(await mine(), []);
  });
});
