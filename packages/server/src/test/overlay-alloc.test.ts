/**
 * The overlay address plan (overlay/alloc.ts) and its store (store/networks.ts): one /24 and one VNI per
 * network, lowest free first and free again after a delete; members get .2 … .254 of it, stable while they
 * are members; a full pool or a full network is refused; sandboxes on their way out hold nothing.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { MEMBERS_PER_NETWORK, freeMemberIp, parsePool, slotOf } from "../overlay/alloc.js";
import { createRow } from "../rows.js";
import { NetworkStore } from "../store/networks.js";
import { SqliteStore } from "../store/sqlite.js";
import { newNetworkId, newSandboxId } from "../ulid.js";
import { attachReady, call } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "csb-overlay-alloc-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("the pool setting: IPv4 CIDRs /8 to /24 without host bits; slot k is the k-th /24 and VNI k+1", () => {
  assert.deepEqual(parsePool("10.240.0.0/12"), { cidr: "10.240.0.0/12", base: 0x0af00000, slots: 4096 });
  assert.deepEqual(slotOf(parsePool("10.240.0.0/12"), 4095), { cidr: "10.255.255.0/24", vni: 4096 });
  for (const bad of ["10.240.0.0", "10.240.0.0/25", "10.240.0.0/7", "10.240.1.0/16", "300.1.1.0/24", "x/24"])
    assert.throws(() => parsePool(bad), /CREATEOS_SANDBOX_OVERLAY_CIDR/, bad);
  assert.equal(MEMBERS_PER_NETWORK, 253);
  assert.equal(freeMemberIp("10.1.2.0/24", new Set()), "10.1.2.2");
  assert.equal(freeMemberIp("10.1.2.0/24", new Set(["10.1.2.2", "10.1.2.4"])), "10.1.2.3");
  const all = new Set(Array.from({ length: 253 }, (_, i) => `10.1.2.${i + 2}`));
  assert.equal(freeMemberIp("10.1.2.0/24", all), undefined);
});

test("the store: subnets and addresses allocated lowest first, freed, and refused when full", async () => {
  const path = join(dir, "db.sqlite");
  const store = SqliteStore.open(path);
  const user = await store.createUser("alloc");
  const nets = NetworkStore.open(path, parsePool("10.5.0.0/23"));
  const net = (name: string) =>
    nets.create({ id: newNetworkId(), user_id: user.id, name, created_at: new Date().toISOString() });
  const a = net("a")!;
  const b = net("b")!;
  assert.deepEqual([a.cidr, a.vni, b.cidr, b.vni], ["10.5.0.0/24", 1, "10.5.1.0/24", 2]);
  assert.equal(net("c"), undefined, "a /23 holds two networks");
  assert.equal(nets.delete(a.id).deleted, true);
  assert.deepEqual(
    [net("c")?.cidr, nets.get(user.id, "c")?.vni],
    ["10.5.0.0/24", 1],
    "a's subnet, free again",
  );

  const input = { shape: "s-1vcpu-256mb", vcpu: 1, mem_mib: 256, disk_mib: 1024, rootfs: "debian:12" };
  const base = { ...input, envs: {}, egress: [], ssh_pubkeys: [], ingress_enabled: false, network_ids: [] };
  const box = async (status: "running" | "destroying" = "running") => {
    const id = newSandboxId();
    const ids = { id, userId: user.id, createdBy: user.id, name: id, hostId: "h" };
    await store.insertSandbox({ ...createRow(base, ids, "local"), status });
    return id;
  };
  const ips: string[] = [];
  const boxes: string[] = [];
  for (let i = 0; i < MEMBERS_PER_NETWORK; i++) {
    const id = await box();
    boxes.push(id);
    const r = nets.join(b.id, id);
    assert.ok(r.ok && r.joined, JSON.stringify(r));
    ips.push(r.ip);
  }
  assert.equal(ips[0], "10.5.1.2");
  assert.equal(ips.at(-1), "10.5.1.254");
  assert.deepEqual(nets.join(b.id, boxes[7]!), { ok: true, ip: ips[7], joined: false }, "stable");
  const extra = await box();
  assert.deepEqual(nets.join(b.id, extra), { ok: false, why: "full" });
  assert.equal(nets.members(b.id).length, MEMBERS_PER_NETWORK, "the refused one is no member");
  // a member on its way out holds no address: the next joiner gets it
  await store.updateSandbox(boxes[10]!, { status: "destroying" });
  assert.equal(nets.members(b.id).length, MEMBERS_PER_NETWORK - 1);
  assert.deepEqual(nets.join(b.id, extra), { ok: true, ip: ips[10], joined: true });
  assert.equal(nets.leave(b.id, boxes[0]!), true);
  assert.equal(nets.members(b.id)[0]?.sandbox_id, boxes[1]);
  assert.deepEqual(nets.delete(b.id).deleted, false);
  nets.close();
  await store.close();
});

test("through the API: a full pool and a full network are 403s, and a refused create holds nothing", async () => {
  const path = join(dir, "api", "db.sqlite");
  const store = SqliteStore.open(path);
  const user = await store.createUser("full");
  const key = `skp_${"f".repeat(32)}`;
  await store.addApiKey(user.id, key);
  const daemon = new ScriptedDaemon();
  const srv = await startServer(
    loadConfig({ dataDir: join(dir, "api"), port: 0 }, { CREATEOS_SANDBOX_OVERLAY_CIDR: "10.98.0.0/24" }),
    createLogger(() => undefined),
    store,
  );
  try {
    await attachReady(srv, daemon);
    const api = (m: string, p: string, body?: unknown) => call(srv.url, m, p, { key, body });
    const one = await api("POST", "/v1/networks", { name: "only" });
    assert.equal(one.status, 200, one.text);
    const two = await api("POST", "/v1/networks", { name: "second" });
    assert.equal(two.status, 403, two.text);
    assert.match(two.json.data.limit, /10\.98\.0\.0\/24.*delete a network first/);
    // fill "only" to the last address, then a create on it is refused before any VM is asked for
    const nets = srv.app.sandboxes.overlay.nets;
    const filler = await store.createUser("filler");
    const base = { shape: "s-1vcpu-256mb", vcpu: 1, mem_mib: 256, disk_mib: 1024, rootfs: "debian:12" };
    const input = { ...base, envs: {}, egress: [], ssh_pubkeys: [], ingress_enabled: false, network_ids: [] };
    for (let i = 0; i < MEMBERS_PER_NETWORK; i++) {
      const id = newSandboxId();
      // another tenant's rows: the network's own tenant stays under its sandbox limit
      const ids = { id, userId: filler.id, createdBy: filler.id, name: id, hostId: "scripted" };
      await store.insertSandbox({ ...createRow(input, ids, "local"), status: "paused" });
      assert.ok(nets.join(one.json.data.id, id).ok);
    }
    const r = await api("POST", "/v1/sandboxes", { ...base, name: "late", networks: [{ id: "only" }] });
    assert.equal(r.status, 403, r.text);
    assert.match(r.json.data.limit, /net-\S+ is full: its subnet 10\.98\.0\.0\/24 holds 253 members/);
    assert.ok(!daemon.calls.some((c) => c.method === "create"), "no VM was asked for");
    const late = (await api("GET", "/v1/sandboxes?limit=500")).json.data.data.find(
      (x: { name: string }) => x.name === "late",
    );
    assert.equal(late.status, "failed");
    assert.equal(nets.networksOf(late.id).length, 0);
  } finally {
    await srv.close();
  }
});
