/**
 * Private networks in the control plane over two scripted host daemons (issue 12): each network's VNI and
 * subnet, each member's address, and exactly what every host is told (`VmSpec.networks` on create, fork
 * and resume; `setNetworks` with the whole set, peers and remote endpoints included, on every change); the
 * API around it — ip absent until programmed, tenancy 404s, delete refused while members remain and fine
 * once they are destroyed — and a restart telling the hosts again. The datapath is networks.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import { type HostInfo, HostdError, type OverlayMembership, type VmSpec } from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { attachReady, call } from "./helpers.js";

const KEY = `skp_${"n".repeat(32)}`;
const OTHER = `skp_${"o".repeat(32)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A scripted host with its own id and VXLAN endpoint. */
class Host extends ScriptedDaemon {
  constructor(
    readonly hostId: string,
    readonly port: number,
  ) {
    super();
  }
  override async info(): Promise<HostInfo> {
    return {
      ...(await super.info()),
      id: this.hostId,
      overlay_endpoint: { addr: "127.0.0.1", port: this.port },
    };
  }
  /** The sets it was told for one sandbox, in order. */
  sets(id: string): OverlayMembership[][] {
    return this.calls
      .filter((c) => c.method === "setNetworks" && c.args[0] === id)
      .map((c) => c.args[1] as OverlayMembership[]);
  }
  spec(method: "create" | "resume" | "fork", id: string): VmSpec | undefined {
    const c = this.calls
      .filter((x) => x.method === method)
      .map((x) => x.args.at(method === "create" ? 0 : 1));
    return (c as VmSpec[]).findLast((s) => s.sandbox_id === id);
  }
}

describe("private networks: allocation and what the hosts are told", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-networks-"));
  const h1 = new Host("h1", 4789);
  const h2 = new Host("h2", 4790);
  let srv: RunningServer;
  const api = (method: string, path: string, body?: unknown, key = KEY) =>
    call(srv.url, method, path, { key, ...(body === undefined ? {} : { body }) });
  const ids: Record<string, string> = {};
  let net = "";
  let net2 = "";

  const start = async () => {
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    srv = await startServer(
      loadConfig({ dataDir, port: 0 }, { CREATEOS_SANDBOX_OVERLAY_CIDR: "10.99.0.0/16" }),
      createLogger(() => undefined),
      store,
    );
    await attachReady(srv, h1);
    await attachReady(srv, h2);
  };
  const create = async (name: string, host: string, networks?: { id: string }[]) => {
    const r = await api("POST", "/v1/sandboxes", {
      shape: "s-1vcpu-256mb",
      rootfs: "debian:12",
      name,
      host_id: host,
      ...(networks ? { networks } : {}),
    });
    assert.equal(r.status, 200, r.text);
    ids[name] = r.json.data.id;
    return r.json.data.id as string;
  };
  const members = async (ref: string) => {
    const r = await api("GET", `/v1/networks/${ref}`);
    assert.equal(r.status, 200, r.text);
    return r.json.data.members as { sandbox_id: string; name: string; status: string; ip?: string }[];
  };
  const waitStatus = async (id: string, status: string) => {
    for (let i = 0; i < 100; i++) {
      if ((await api("GET", `/v1/sandboxes/${id}`)).json.data.status === status) return;
      await sleep(50);
    }
    assert.fail(`${id} never became ${status}`);
  };

  before(async () => {
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    await store.addApiKey((await store.createUser("nora")).id, KEY);
    await store.addApiKey((await store.createUser("otto")).id, OTHER);
    await store.close();
    await start();
  });
  after(async () => {
    await srv.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("create on a network, by name and by id: the spec carries the membership, peers and remotes", async () => {
    net = (await api("POST", "/v1/networks", { name: "backend" })).json.data.id;
    net2 = (await api("POST", "/v1/networks", { name: "other" })).json.data.id;
    const a = await create("node-a", "h1", [{ id: "backend" }]);
    const specA = h1.spec("create", a)!;
    assert.deepEqual(specA.networks, [
      {
        network_id: net,
        network_name: "backend",
        vni: 1,
        cidr: "10.99.0.0/24",
        ip: "10.99.0.2",
        peers: [],
        remotes: [],
      },
    ]);
    const b = await create("node-b", "h2", [{ id: net }]);
    assert.deepEqual(h2.spec("create", b)!.networks, [
      {
        network_id: net,
        network_name: "backend",
        vni: 1,
        cidr: "10.99.0.0/24",
        ip: "10.99.0.3",
        peers: [{ sandbox_id: a, name: "node-a", ip: "10.99.0.2" }],
        remotes: [{ addr: "127.0.0.1", port: 4789 }],
      },
    ]);
    // node-a's host was told of its new peer, and of the other host's endpoint
    assert.deepEqual(h1.sets(a).at(-1), [
      {
        ...specA.networks![0]!,
        peers: [{ sandbox_id: b, name: "node-b", ip: "10.99.0.3" }],
        remotes: [{ addr: "127.0.0.1", port: 4790 }],
      },
    ]);
    assert.deepEqual(await members("backend"), [
      { sandbox_id: a, name: "node-a", status: "running", ip: "10.99.0.2" },
      { sandbox_id: b, name: "node-b", status: "running", ip: "10.99.0.3" },
    ]);
    const list = (await api("GET", "/v1/networks")).json.data.data;
    assert.deepEqual(
      list.map((n: { name: string; member_count: number }) => [n.name, n.member_count]),
      [
        ["other", 0],
        ["backend", 2],
      ],
    );
    // a sandbox outside any network is created without one
    const c = await create("node-c", "h1");
    assert.equal(h1.spec("create", c)!.networks, undefined);
  });

  test("live attach: the member's host first, then its peers; detach the other way round", async () => {
    const [a, b, c] = [ids["node-a"]!, ids["node-b"]!, ids["node-c"]!];
    const before = h1.sets(a).length;
    const r = await api("POST", `/v1/sandboxes/${c}/networks`, { id: "backend" });
    assert.deepEqual(r.json, { status: "success", data: { ok: true } });
    const setC = h1.sets(c).at(-1)!;
    assert.equal(setC.length, 1);
    assert.equal(setC[0]!.ip, "10.99.0.4");
    assert.deepEqual(
      setC[0]!.peers.map((p) => p.name),
      ["node-a", "node-b"],
    );
    assert.deepEqual(setC[0]!.remotes, [{ addr: "127.0.0.1", port: 4790 }], "node-b's host only");
    assert.deepEqual(
      h1
        .sets(a)
        .at(-1)![0]!
        .peers.map((p) => p.name),
      ["node-b", "node-c"],
    );
    assert.equal(h1.sets(a).length, before + 1);
    assert.deepEqual(
      h2
        .sets(b)
        .at(-1)![0]!
        .peers.map((p) => p.ip),
      ["10.99.0.2", "10.99.0.4"],
    );
    // attaching again changes nothing
    const again = await api("POST", `/v1/sandboxes/${c}/networks`, { id: net });
    assert.equal(again.status, 200, again.text);
    assert.equal((await members(net)).length, 3);
    // a second network: the set holds both, each with its own subnet and VNI
    assert.equal((await api("POST", `/v1/sandboxes/${c}/networks`, { id: net2 })).status, 200);
    assert.deepEqual(
      h1
        .sets(c)
        .at(-1)!
        .map((m) => [m.network_name, m.vni, m.cidr, m.ip]),
      [
        ["backend", 1, "10.99.0.0/24", "10.99.0.4"],
        ["other", 2, "10.99.1.0/24", "10.99.1.2"],
      ],
    );
    // detach: cut on node-c's host, the peers told
    const d = await api("DELETE", `/v1/sandboxes/${c}/networks/backend`);
    assert.deepEqual(d.json.data, { ok: true });
    assert.deepEqual(
      h1
        .sets(c)
        .at(-1)!
        .map((m) => m.network_name),
      ["other"],
    );
    assert.deepEqual(
      h1
        .sets(a)
        .at(-1)![0]!
        .peers.map((p) => p.name),
      ["node-b"],
    );
    assert.deepEqual(
      h2
        .sets(b)
        .at(-1)![0]!
        .peers.map((p) => p.name),
      ["node-a"],
    );
    assert.equal((await api("DELETE", `/v1/sandboxes/${c}/networks/backend`)).status, 404, "not a member");
    assert.equal((await api("DELETE", `/v1/sandboxes/${c}/networks/${net2}`)).status, 200);
    assert.deepEqual(h1.sets(c).at(-1), []);
  });

  test("a host refusing the membership: the catalog's error, and no membership is kept", async () => {
    const c = ids["node-c"]!;
    const orig = h1.setNetworks.bind(h1);
    h1.setNetworks = async () => {
      throw new HostdError("bad_request", "vni 1 is in use by another network on this host");
    };
    try {
      const r = await api("POST", `/v1/sandboxes/${c}/networks`, { id: "backend" });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.json.status, "fail");
    } finally {
      h1.setNetworks = orig;
    }
    assert.deepEqual(
      (await members("backend")).map((m) => m.name),
      ["node-a", "node-b"],
    );
  });

  test("ip is absent until programmed; membership survives pause and comes back in the resume's spec", async () => {
    const a = ids["node-a"]!;
    // a paused fork that asks for the network: a member with an address nobody programmed yet
    const p = await api("POST", `/v1/sandboxes/${a}/pause`);
    assert.equal(p.status, 202, p.text);
    await waitStatus(a, "paused");
    const pausedA = (await members("backend")).find((m) => m.sandbox_id === a)!;
    assert.deepEqual(pausedA, { sandbox_id: a, name: "node-a", status: "paused", ip: "10.99.0.2" });
    const f = await api("POST", `/v1/sandboxes/${a}/fork`, {
      start_paused: true,
      networks: [{ id: "backend" }],
    });
    assert.equal(f.status, 200, f.text);
    const child = f.json.data.id as string;
    const listed = (await members("backend")).find((m) => m.sandbox_id === child)!;
    assert.equal(listed.status, "paused");
    assert.equal(listed.ip, undefined, "not programmed yet");
    // a fork that does not ask inherits nothing
    const plain = await api("POST", `/v1/sandboxes/${a}/fork`, {});
    assert.equal(plain.status, 200, plain.text);
    assert.equal(h1.spec("fork", plain.json.data.id)!.networks, undefined);
    assert.ok(!(await members("backend")).some((m) => m.sandbox_id === plain.json.data.id));
    // resume: the spec carries the set as it is now (the paused child is a peer)
    assert.equal((await api("POST", `/v1/sandboxes/${a}/resume`)).status, 202);
    await waitStatus(a, "running");
    const resumed = h1.spec("resume", a)!.networks!;
    assert.equal(resumed[0]!.ip, "10.99.0.2", "the same address");
    assert.deepEqual(
      resumed[0]!.peers.map((x) => x.sandbox_id),
      [ids["node-b"], child],
    );
    assert.equal((await api("POST", `/v1/sandboxes/${child}/resume`)).status, 202);
    await waitStatus(child, "running");
    const c = (await members("backend")).find((m) => m.sandbox_id === child)!;
    assert.equal(c.ip, h1.spec("resume", child)!.networks![0]!.ip, "programmed by its resume");
  });

  test("another tenant's network is a 404 everywhere", async () => {
    const mine = (await api("POST", "/v1/sandboxes", { shape: "s-1vcpu-256mb", rootfs: "debian:12" }, OTHER))
      .json.data.id as string;
    for (const ref of [net, "backend"]) {
      assert.equal((await api("GET", `/v1/networks/${ref}`, undefined, OTHER)).status, 404);
      assert.equal((await api("DELETE", `/v1/networks/${ref}`, undefined, OTHER)).status, 404);
      const c = await api(
        "POST",
        "/v1/sandboxes",
        { shape: "s-1vcpu-256mb", rootfs: "debian:12", networks: [{ id: ref }] },
        OTHER,
      );
      assert.equal(c.status, 404, c.text);
      assert.ok(c.json.data.network, c.text);
      const at = await api("POST", `/v1/sandboxes/${mine}/networks`, { id: ref }, OTHER);
      assert.equal(at.status, 404, at.text);
      assert.equal(
        (await api("DELETE", `/v1/sandboxes/${mine}/networks/${ref}`, undefined, OTHER)).status,
        404,
      );
      const fk = await api("POST", `/v1/sandboxes/${mine}/fork`, { networks: [{ id: ref }] }, OTHER);
      assert.equal(fk.status, 404, fk.text);
    }
    // the owner's view did not change
    assert.equal((await members("backend")).length, 3);
  });

  test("attach needs a running sandbox", async () => {
    const c = ids["node-c"]!;
    assert.equal((await api("POST", `/v1/sandboxes/${c}/pause`)).status, 202);
    await waitStatus(c, "paused");
    const r = await api("POST", `/v1/sandboxes/${c}/networks`, { id: "backend" });
    assert.equal(r.status, 409, r.text);
    assert.match(r.json.data.status, /paused/);
  });

  test("a restart tells every running member's host its set again", async () => {
    await srv.close();
    const [a, b] = [ids["node-a"]!, ids["node-b"]!];
    const toldC = h1.sets(ids["node-c"]!).length;
    const n1 = h1.sets(a).length;
    const n2 = h2.sets(b).length;
    // start() returns once both hosts are attached and reconciled
    await start();
    // each host's reconcile tells its own members, and the members elsewhere that share a network with
    // them (its endpoint may be new): node-a is told twice, node-b (whose host came second) once or more
    assert.equal(h1.sets(a).length, n1 + 2);
    assert.ok(h2.sets(b).length > n2);
    assert.deepEqual(h1.sets(a).at(-1), h1.spec("resume", a)!.networks, "the set its resume had");
    assert.deepEqual(h2.sets(b).at(-1), h2.sets(b).at(n2 - 1), "the same set as before the restart");
    assert.equal(h1.sets(ids["node-c"]!).length, toldC, "node-c is paused and in no network: not told");
  });

  test("delete: refused while members remain, saying what to do; fine once they are destroyed", async () => {
    const r = await api("DELETE", "/v1/networks/backend");
    assert.equal(r.status, 409, r.text);
    assert.match(r.json.data.network, /3 member\(s\).*node-a.*detach.*or destroy/);
    const all = await members("backend");
    for (const m of all) assert.equal((await api("DELETE", `/v1/sandboxes/${m.sandbox_id}`)).status, 200);
    // destroying members are no members: listed nowhere, and the delete goes through at once
    assert.deepEqual(await members("backend"), []);
    const del = await api("DELETE", "/v1/networks/backend");
    assert.deepEqual(del.json, { status: "success", data: { ok: true } }, del.text);
    assert.equal((await api("GET", `/v1/networks/${net}`)).status, 404);
    // its subnet and VNI are free again: the next network gets them
    const again = (await api("POST", "/v1/networks", { name: "again" })).json.data.id;
    const d = await create("node-d", "h2", [{ id: again }]);
    const s = h2.spec("create", d)!.networks![0]!;
    assert.deepEqual([s.vni, s.cidr, s.ip], [1, "10.99.0.0/24", "10.99.0.2"]);
  });
});
