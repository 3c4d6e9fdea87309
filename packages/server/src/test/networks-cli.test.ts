/**
 * The seed's private-network CLI lines (cli-sandboxes: `network create|ls|attach|detach|rm`, `create
 * --network`) with our built `createos` against a server over a scripted host daemon: names and ids both
 * work, JSON answers, and `network rm` of a network with members says what to do (a usage error) unless
 * `--yes` lets it detach them first. The same lines on real VMs are in networks.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import type { OverlayMembership } from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { attachReady } from "./helpers.js";

const KEY = `skp_${"c".repeat(32)}`;
const cliHelpers = fileURLToPath(new URL("../../../cli/dist/test/helpers.js", import.meta.url));

describe("createos sandbox network … against a scripted host", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-networks-cli-"));
  const daemon = new ScriptedDaemon();
  let srv: RunningServer;
  let run: (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>;
  // biome-ignore lint/suspicious/noExplicitAny: the CLI's JSON
  const ok = async (args: string[]): Promise<any> => {
    const r = await run(args);
    assert.equal(r.code, 0, `createos ${args.join(" ")}: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout);
  };
  const lastSet = (id: string) =>
    daemon.calls.findLast((c) => c.method === "setNetworks" && c.args[0] === id)?.args[1] as
      | OverlayMembership[]
      | undefined;

  before(async () => {
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    await store.addApiKey((await store.createUser("cleo")).id, KEY);
    srv = await startServer(
      loadConfig({ dataDir, port: 0 }, {}),
      createLogger(() => undefined),
      store,
    );
    await attachReady(srv, daemon);
    const h = await import(cliHelpers);
    const env = h.cleanEnv({ HOME: h.tempDir("networks-cli-") });
    run = (args) => h.runCli(args, { env });
    assert.equal((await run(["login", "--token", KEY, "--url", srv.url])).code, 0);
  });
  after(async () => {
    await srv.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("create, create --network, ls, attach, detach, rm with members", async () => {
    const net = await ok(["sandbox", "network", "create", "my-net", "--output", "json"]);
    assert.equal(net.action, "network_created");
    assert.match(net.id, /^net-/);
    // --network by name, then by id
    const small = ["--shape", "s-1vcpu-256mb", "--rootfs", "debian:12"];
    const a = await ok(["sandbox", "create", ...small, "--name", "box-a", "--network", "my-net"]);
    const b = await ok(["sb", "create", ...small, "--network", net.id]);
    const specA = daemon.calls.find(
      (c) => c.method === "create" && (c.args[0] as { sandbox_id: string }).sandbox_id === a.id,
    );
    assert.equal((specA?.args[0] as { networks: OverlayMembership[] }).networks[0]!.network_name, "my-net");
    const box = await ok(["sb", "create", ...small, "--name", "my-box"]);
    const ls = await ok(["sandbox", "network", "ls"]);
    assert.deepEqual(
      ls.map((n: { name: string; member_count: number }) => [n.name, n.member_count]),
      [["my-net", 2]],
    );
    const t = await run(["sandbox", "network", "ls", "-o", "table"]);
    assert.match(t.stdout, /^net-\S+\s+my-net\s+2\s/m);
    const att = await ok(["sandbox", "network", "attach", "my-box", "my-net"]);
    assert.deepEqual(att, { action: "network_attached", id: box.id, network: "my-net" });
    assert.deepEqual(
      lastSet(box.id)?.map((m) => m.peers.map((p) => p.name)),
      [["box-a", b.name]],
    );
    const got = await ok(["sandbox", "network", "get", "my-net"]);
    assert.deepEqual(
      got.members.map((m: { name: string; ip?: string }) => [m.name, typeof m.ip]),
      [
        ["box-a", "string"],
        [b.name, "string"],
        ["my-box", "string"],
      ],
    );
    const det = await ok(["sandbox", "network", "detach", "my-box", "my-net", "--yes"]);
    assert.deepEqual(det, { action: "network_detached", id: box.id, network: net.id });
    assert.deepEqual(lastSet(box.id), []);
    // members remain: rm says what to do, as a usage error, and deletes nothing
    const refused = await run(["sandbox", "network", "rm", "my-net", "-o", "table"]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /my-net has 2 member\(s\) \(box-a, .+\): pass --yes to detach/);
    assert.match(refused.stderr, /createos sandbox network detach <sandbox> my-net\) or destroy them/);
    assert.equal((await ok(["sandbox", "network", "get", "my-net"])).members.length, 2);
    // --yes: detached first, then deleted
    const rm = await ok(["sandbox", "network", "rm", "my-net", "--yes"]);
    assert.deepEqual(rm, { action: "network_deleted", id: net.id, name: "my-net" });
    assert.deepEqual(lastSet(a.id), []);
    assert.equal((await run(["sandbox", "network", "get", "my-net", "-o", "table"])).code, 1);
  });

  test("a network whose name starts with net is detached by name", async () => {
    await ok(["sandbox", "network", "create", "network1"]);
    await ok(["sandbox", "network", "attach", "my-box", "network1"]);
    const det = await ok(["sandbox", "network", "detach", "my-box", "network1", "--yes"]);
    assert.equal(det.action, "network_detached");
    assert.match(det.network, /^net-/);
  });
});
