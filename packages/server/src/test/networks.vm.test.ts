/**
 * Private networks end to end on real VMs (issue 12's "done when"), through the published SDK 0.7.1:
 * the seed recipe (how-to-disks-networks-templates §2) verbatim apart from the import, `console` and the
 * shape (the small one: the recipe's s-4vcpu-4gb buys nothing here); then members reaching each other by
 * overlay IP, by name and by `<name>.<network>`, an outsider that cannot until it is attached live and
 * cannot again once detached, isolation from a second network of the tenant and from another tenant's
 * network (by IP and by name), a membership surviving pause/resume, and the seed's CLI lines
 * (cli-sandboxes, Private networks). Last, with two host daemons (two VXLAN ports on this machine), one
 * member on each host pinging across.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { cliAs } from "./disks-guest.js";
import { type HostdProc, destroyAll, startEngineServer, startHostd } from "./engine-helpers.js";
import { type ServerProc, cleanup, newUser } from "./helpers.js";

const SHAPE = "s-1vcpu-256mb";
const SDK = "@nodeops-createos/sandbox";

// biome-ignore lint/suspicious/noExplicitAny: the published SDK's types are not part of the server's build
let createClient: any;
// biome-ignore lint/suspicious/noExplicitAny: SDK handles
type Box = any;

/** One ping attempt after another until one answers (`tries` of them): whether one did, and the last output. */
async function ping(from: Box, target: string, tries: number): Promise<{ ok: boolean; out: string }> {
  let out = "";
  for (let i = 0; i < tries; i++) {
    const r = await from.runCommand("ping", ["-c", "1", "-W", "3", target]);
    out = `${r.result.stdout}${r.result.stderr}`;
    if (r.result.exit_code === 0) return { ok: true, out };
    await sleep(1000);
  }
  return { ok: false, out };
}
const reaches = async (from: Box, target: string) => {
  const r = await ping(from, target, 5);
  assert.ok(r.ok, `${from.name} should reach ${target}: ${r.out}`);
};
/** Two attempts, 3 s each: what a member reaches answers in well under that (see `reaches`). */
const isCutOff = async (from: Box, target: string) => {
  const r = await ping(from, target, 2);
  assert.ok(!r.ok, `${from.name} must not reach ${target}: ${r.out}`);
};

// biome-ignore lint/suspicious/noExplicitAny: SDK client
async function overlayIp(client: any, net: string, box: Box): Promise<string> {
  const view = await client.networks.get(net);
  const ip = view.members?.find((m: { sandbox_id: string }) => m.sandbox_id === box.id)?.ip;
  assert.match(ip ?? "", /^10\.2(4[0-9]|5[0-5])\.\d+\.\d+$/, JSON.stringify(view));
  return ip;
}

describe("private networks on one host", { timeout: 60 * 60_000 }, () => {
  let s: ServerProc;
  let rivalKey: string;
  const out: string[] = [];
  const console = { log: (...a: unknown[]) => out.push(a.map(String).join(" ")) };

  before(async () => {
    ({ createClient } = await import(SDK));
    s = await startEngineServer();
    process.env.CREATEOS_SANDBOX_API_KEY = s.adminKey;
    process.env.CREATEOS_SANDBOX_BASE_URL = s.url;
    rivalKey = await newUser(s.dataDir, "rival");
  });
  after(async () => {
    if (s) await destroyAll(s, [s.adminKey, rivalKey]);
    await s?.stop();
    if (s) cleanup(s.dataDir);
  });

  test("the seed recipe", { timeout: 15 * 60_000 }, async () => {
    const client = createClient();

    // 1. Create the overlay network.
    const network = await client.networks.create({ name: "backend" });
    // network.id = "net_01abc…"

    let sandboxA: Awaited<ReturnType<typeof client.createSandbox>> | undefined;
    let sandboxB: Awaited<ReturnType<typeof client.createSandbox>> | undefined;

    try {
      // 2. Boot two sandboxes already joined to the network.
      // Alternatively, call sandbox.attachNetwork(network.id) on a running sandbox.
      [sandboxA, sandboxB] = await Promise.all([
        client.createSandbox({
          shape: SHAPE,
          rootfs: "devbox:1",
          name: "node-a",
          networks: [{ id: network.id }],
        }),
        client.createSandbox({
          shape: SHAPE,
          rootfs: "devbox:1",
          name: "node-b",
          networks: [{ id: network.id }],
        }),
      ]);

      // 3. Resolve per-sandbox overlay IPs via networks.get().
      // networks.get() returns members with per-network IPs on detail GET.
      // SandboxView.ip is the management IP, not the overlay address —
      // always read overlay IPs from networkView.members.
      const networkView = await client.networks.get(network.id);
      const ipById = new Map(
        // biome-ignore lint/suspicious/noExplicitAny: the seed's code, untyped here
        (networkView.members ?? []).map((m: any) => [m.sandbox_id, m.ip]),
      );
      const ipA = ipById.get(sandboxA.id);
      const ipB = ipById.get(sandboxB.id);
      console.log("overlay IPs:", ipA, ipB);

      // 4. Sandboxes reach each other on the overlay by those IPs.
      if (ipA && ipB) {
        const ping = await sandboxB.runCommand("ping", ["-c", "3", ipA]);
        console.log(ping.result.stdout);
      }

      // 5. Detach and clean up.
      await Promise.all([sandboxA.detachNetwork(network.id), sandboxB.detachNetwork(network.id)]);
    } finally {
      await Promise.allSettled([sandboxA?.destroy(), sandboxB?.destroy()]);
      // Delete may fail transiently if members are still tearing down server-side.
      // Retry to avoid leaking against the network quota.
      for (let attempt = 1; attempt <= 3; attempt++) {
        try {
          await client.networks.delete(network.id);
          break;
        } catch {
          if (attempt < 3) await new Promise((r) => setTimeout(r, 2000));
        }
      }
    }

    const [ips, pinged] = out.splice(0);
    const m = /^overlay IPs: (10\.\d+\.\d+\.\d+) (10\.\d+\.\d+\.\d+)$/.exec(ips ?? "");
    assert.ok(m && m[1] !== m[2], `two overlay addresses: ${ips}`);
    assert.match(pinged ?? "", /3 packets transmitted, 3 received.*/, pinged);
    assert.match(pinged ?? "", new RegExp(`from ${m![1]!.replaceAll(".", "\\.")}`));
    const left = await client.networks.list();
    assert.ok(!left.some((n: { id: string }) => n.id === network.id), "the network was deleted");
  });

  test(
    "members by IP and name, an outsider, live attach and detach, isolation, pause/resume",
    {
      timeout: 30 * 60_000,
    },
    async () => {
      const client = createClient();
      const rival = createClient({ apiKey: rivalKey });
      const mesh = await client.networks.create({ name: "mesh" });
      const mesh2 = await client.networks.create({ name: "mesh2" });
      const theirs = await rival.networks.create({ name: "mesh" });
      const on = (net: { id: string }) => ({ shape: SHAPE, networks: [{ id: net.id }] });
      // One after another: the recipe above already boots two members at once.
      const a = await client.createSandbox({ ...on(mesh), name: "mesh-a" });
      const b = await client.createSandbox({ ...on(mesh), name: "mesh-b" });
      const c = await client.createSandbox({ shape: SHAPE, name: "outsider" });
      const d = await client.createSandbox({ ...on(mesh2), name: "iso-d" });
      const e = await rival.createSandbox({ ...on(theirs), name: "rival-e" });
      const [ipA, ipB, ipD, ipE] = [
        await overlayIp(client, mesh.id, a),
        await overlayIp(client, mesh.id, b),
        await overlayIp(client, mesh2.id, d),
        await overlayIp(rival, theirs.id, e),
      ];
      assert.equal(new Set([ipA, ipB, ipD, ipE]).size, 4);
      assert.notEqual(ipA, a.data.ip, "the overlay address is not the sandbox's own ip");

      // members: by address, by name, by name.network
      await reaches(b, ipA);
      await reaches(a, ipB);
      await reaches(a, "mesh-b");
      await reaches(b, "mesh-a.mesh");
      // the outsider reaches no member, and no member reaches it by name
      await isCutOff(c, ipA);
      await isCutOff(c, "mesh-a");
      await isCutOff(a, "outsider");

      // live attach: in force when it answers
      await c.attachNetwork("mesh");
      const ipC = await overlayIp(client, mesh.id, c);
      await reaches(c, ipA);
      await reaches(c, "mesh-b");
      await reaches(a, "outsider");
      await reaches(b, ipC);
      // detach: cut when it answers, both ways, names too
      await c.detachNetwork(mesh.id);
      await isCutOff(c, ipA);
      await isCutOff(c, "mesh-b");
      await isCutOff(a, ipC);
      await isCutOff(a, "outsider");

      // another network of the tenant, and another tenant's network of the same name: no reach either way
      for (const [x, y, ipY] of [
        [a, d, ipD],
        [d, a, ipA],
        [a, e, ipE],
        [e, a, ipA],
        [e, b, ipB],
      ] as const) {
        await isCutOff(x, ipY);
        await isCutOff(x, y.name);
        await isCutOff(x, `${y.name}.mesh`);
      }
      // and the other tenant cannot touch the network: 404 on get, attach and delete
      for (const p of [
        () => rival.networks.get(mesh.id),
        () => e.attachNetwork(mesh.id),
        () => rival.networks.delete(mesh.id),
      ]) {
        await assert.rejects(p(), (err: { statusCode?: number }) => err.statusCode === 404);
      }

      // pause/resume: the membership and its address stay, and work again once running
      await a.pause();
      await a.waitUntilPaused();
      const paused = (await client.networks.get(mesh.id)).members.find(
        (m: { sandbox_id: string }) => m.sandbox_id === a.id,
      );
      assert.deepEqual([paused.status, paused.ip], ["paused", ipA]);
      await a.resume();
      await a.waitUntilRunning();
      assert.equal(await overlayIp(client, mesh.id, a), ipA);
      await reaches(b, ipA);
      await reaches(a, "mesh-b");

      // the network goes once its members are destroyed (the recipe's retry), and not before
      await assert.rejects(client.networks.delete(mesh.id), /member/);
      await Promise.all([a.destroy(), b.destroy()]);
      const view = await client.networks.get(mesh.id);
      assert.deepEqual(view.members, [], "destroyed sandboxes are no members");
      assert.deepEqual(await client.networks.delete(mesh.id), { ok: true });
    },
  );

  test("the seed's CLI lines", { timeout: 15 * 60_000 }, async () => {
    const { ok, confirm, raw } = await cliAs(s.url, s.adminKey);
    const created = await ok(["sandbox", "network", "create", "my-net"]);
    assert.equal(created.action, "network_created");
    const ls = await ok(["sandbox", "network", "ls"]);
    assert.ok(ls.some((n: { name: string }) => n.name === "my-net"));
    const peer = await ok([
      "sandbox",
      "create",
      "--shape",
      SHAPE,
      "--name",
      "cli-peer",
      "--network",
      "my-net",
    ]);
    const box = await ok(["sandbox", "create", "--shape", SHAPE, "--name", "my-box"]);
    const client = createClient();
    const [peerBox, myBox] = [await client.getSandbox(peer.id), await client.getSandbox(box.id)];
    await isCutOff(myBox, "cli-peer");
    await ok(["sandbox", "network", "attach", "my-box", "my-net"]);
    await reaches(myBox, "cli-peer");
    await reaches(peerBox, "my-box.my-net");
    await confirm(
      ["sandbox", "network", "detach", "my-box", "my-net"],
      /Detach my-box .*from my-net\?/,
      /Detached/,
    );
    await isCutOff(myBox, "cli-peer");
    // a member remains: off a terminal rm says what to do; on one it asks, detaches it and deletes
    const refused = await raw(["sandbox", "network", "rm", "my-net", "-o", "table"]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /1 member\(s\) \(cli-peer\).*detach.*or destroy/s);
    await confirm(
      ["sandbox", "network", "rm", "my-net"],
      /Its 1 member\(s\) \(cli-peer\) are detached first/,
      /Deleted network my-net/,
    );
    await isCutOff(peerBox, "my-box");
  });
});

describe("a network across two host daemons", { timeout: 30 * 60_000 }, () => {
  const token = `ovl-${randomBytes(16).toString("hex")}`;
  const hostds: HostdProc[] = [];
  const dirs = [0, 1].map(() => mkdtempSync(join(tmpdir(), "csb-ovl-hostd-")));
  const cpDir = mkdtempSync(join(tmpdir(), "csb-ovl-cp-"));
  let s: ServerProc | undefined;

  before(async () => {
    ({ createClient } = await import(SDK));
    for (const [i, dir] of dirs.entries()) {
      const env = {
        CREATEOS_SANDBOX_OVERLAY_ADDR: "127.0.0.1",
        CREATEOS_SANDBOX_OVERLAY_PORT: String(47891 + i),
      };
      hostds.push(await startHostd({ dataDir: dir, id: `ovl-host-${i}`, token, env }));
    }
    s = await startEngineServer(
      { CREATEOS_SANDBOX_HOSTD_TOKEN: token },
      cpDir,
      hostds.flatMap((h) => ["--hostd", h.url]),
    );
  });
  after(async () => {
    if (s) await destroyAll(s, [s.adminKey]);
    await s?.stop();
    for (const h of hostds) await h.stop();
    for (const d of [...dirs, cpDir]) cleanup(d);
  });

  test("one member on each host: they reach each other by IP and by name", async () => {
    const client = createClient({ apiKey: s!.adminKey, baseUrl: s!.url });
    const net = await client.networks.create({ name: "span" });
    const [x, y] = await Promise.all(
      [0, 1].map((i) =>
        client.createSandbox({
          shape: SHAPE,
          name: `span-${i}`,
          host_id: `ovl-host-${i}`,
          networks: [{ id: "span" }],
        }),
      ),
    );
    assert.deepEqual([x.data.host_id, y.data.host_id], ["ovl-host-0", "ovl-host-1"]);
    await reaches(x, await overlayIp(client, net.id, y));
    await reaches(y, await overlayIp(client, net.id, x));
    await reaches(x, "span-1.span");
    await reaches(y, "span-0");
  });
});
