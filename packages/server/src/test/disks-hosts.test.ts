/**
 * Disk attachments over two scripted host daemons (in process, no VM): what the API answers and keeps when
 * a host or its guest agent fails under a mount, a detach or a rotation (a catalog error, never a 500; the
 * mount status back where a retry can start; a down host skipped and given the keys when it is back), a
 * disk deleted while the VM of a create boots, and the mount-path rule's field. The disks against real VMs
 * are disks.vm.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { S3_KEYS, type TestS3, startS3 } from "@createos-sandbox/hostd/disks/s3test";
import { ScriptedDaemon } from "@createos-sandbox/hostd/remote/scripted";
import {
  type DiskMount,
  type HostInfo,
  HostdError,
  type VmRuntime,
  type VmSpec,
} from "@createos-sandbox/protocol";
import { type RunningServer, startServer } from "../app.js";
import { loadConfig } from "../config.js";
import { createLogger } from "../log.js";
import { SqliteStore } from "../store/sqlite.js";
import { EPHEMERAL_EDGE, attachReady, call } from "./helpers.js";

const KEY = `skp_${"d".repeat(32)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** What a host says of itself when it fails: paths and addresses that must stay in the log. */
const HOST_TEXT = "agent on /var/lib/createos-sandbox/vms/x/agent.sock did not answer (10.201.0.7)";

/** A scripted host with its own id that can be taken down, and whose disk calls can be made to fail. */
class Host extends ScriptedDaemon {
  down = false;
  failMount: Error | undefined;
  failUnmount: Error | undefined;
  failCredentials: Error | undefined;
  /** Held while set: create() waits for it (a VM that is still booting). */
  booting: Promise<void> | undefined;
  readonly mounts: { id: string; mount_path: string; access_key: string; disk_id: string }[] = [];
  readonly credentials: { diskId: string; accessKey: string }[] = [];
  constructor(readonly hostId: string) {
    super();
  }
  private gone(): void {
    if (this.down)
      throw new HostdError("unreachable", `host daemon ${this.hostId} is unreachable: ECONNREFUSED`);
  }
  override async info(): Promise<HostInfo> {
    this.gone();
    return { ...(await super.info()), id: this.hostId };
  }
  override async create(spec: VmSpec): Promise<VmRuntime> {
    const r = await super.create(spec);
    await this.booting;
    return r;
  }
  override async mountDisk(id: string, m: DiskMount) {
    this.gone();
    await super.mountDisk(id, m);
    this.mounts.push({ id, mount_path: m.mount_path, access_key: m.access_key, disk_id: m.disk_id });
    if (this.failMount) throw this.failMount;
  }
  override async unmountDisk(id: string, mountPath: string) {
    this.gone();
    if (this.failUnmount) throw this.failUnmount;
    await super.unmountDisk(id, mountPath);
  }
  // (access key, secret key): the scripted base declares only the id.
  override async setDiskCredentials(diskId: string, ...keys: string[]) {
    this.gone();
    if (this.failCredentials) throw this.failCredentials;
    await super.setDiskCredentials(diskId);
    this.credentials.push({ diskId, accessKey: keys[0]! });
  }
}

describe("disk attachments when hosts and agents fail", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "csb-disks-hosts-"));
  const h1 = new Host("h1");
  const h2 = new Host("h2");
  const logs: string[] = [];
  let srv: RunningServer;
  let s3: TestS3;
  let disk = "";
  const api = (method: string, path: string, body?: unknown) =>
    call(srv.url, method, path, { key: KEY, ...(body === undefined ? {} : { body }) });
  const register = async (name: string) => {
    const r = await api("POST", "/v1/disks", {
      name,
      kind: "s3",
      config: { bucket: "data", endpoint: s3.endpoint, use_path_style: true },
      credentials: S3_KEYS,
    });
    assert.equal(r.status, 200, r.text);
    return r.json.data.id as string;
  };
  const create = async (host: string, disks: unknown[]) => {
    const r = await api("POST", "/v1/sandboxes", {
      shape: "s-1vcpu-256mb",
      rootfs: "debian:12",
      host_id: host,
      disks,
    });
    assert.equal(r.status, 200, r.text);
    return r.json.data.id as string;
  };
  const views = async (id: string) => {
    const r = await api("GET", `/v1/sandboxes/${id}/disks`);
    assert.equal(r.status, 200, r.text);
    return r.json.data.data as Record<string, unknown>[];
  };
  const health = async (h: Host, healthy: boolean) => {
    for (let i = 0; i < 100; i++) {
      if (srv.app.hosts.byId(h.hostId)?.healthy === healthy) return;
      await sleep(100);
    }
    assert.fail(`${h.hostId} never became ${healthy ? "healthy" : "unhealthy"}`);
  };

  before(async () => {
    // The test S3 server is on loopback: listed, as an operator lists a LAN endpoint (protocol/outbound.ts).
    process.env.CREATEOS_SANDBOX_PRIVATE_EGRESS = "127.0.0.1/32";
    s3 = await startS3("127.0.0.1", ["data"]);
    const store = SqliteStore.open(join(dataDir, "db.sqlite"));
    await store.addApiKey((await store.createUser("dora")).id, KEY);
    await store.close();
    srv = await startServer(
      loadConfig({ dataDir, port: 0 }, EPHEMERAL_EDGE),
      createLogger((l) => void logs.push(l)),
      SqliteStore.open(join(dataDir, "db.sqlite")),
    );
    await attachReady(srv, h1);
    await attachReady(srv, h2);
    disk = await register("d1");
  });
  after(async () => {
    process.env.CREATEOS_SANDBOX_PRIVATE_EGRESS = "";
    await srv.close();
    await s3.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("a detach the agent does not answer: 503 agent_unreachable, the mount as it was, a retry detaches", async () => {
    const id = await create("h1", [{ disk_id: disk, mount_path: "/data" }]);
    assert.equal((await views(id))[0]?.mount_status, "mounted");
    h1.failUnmount = new HostdError("agent_unreachable", HOST_TEXT);
    const r = await api("DELETE", `/v1/sandboxes/${id}/disks/${disk}?mount_path=/data`);
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.status, "error");
    assert.equal(r.json.message, "the sandbox's agent did not answer: it did not answer in time");
    assert.ok(!r.text.includes("agent.sock"), r.text);
    assert.deepEqual(
      (await views(id)).map((v) => [v.mount_path, v.mount_status]),
      [["/data", "mounted"]],
      "the attachment is not left unmounting",
    );
    h1.failUnmount = undefined;
    const again = await api("DELETE", `/v1/sandboxes/${id}/disks/${disk}?mount_path=/data`);
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.json.data, { detached: true });
    assert.deepEqual(await views(id), []);
    await api("DELETE", `/v1/sandboxes/${id}`);
  });

  test("a failed mount keeps the catalog's words in mount_error and the host's in the log", async () => {
    h1.failMount = new HostdError("agent_unreachable", HOST_TEXT);
    const id = await create("h1", [{ disk_id: disk, mount_path: "/data" }]);
    h1.failMount = undefined;
    const [v] = await views(id);
    assert.equal(v?.mount_status, "error");
    assert.equal(v?.mount_error, "the sandbox's agent did not answer: it did not answer in time");
    const line = logs.find((l) => l.includes('"disk mount failed"') && l.includes(id));
    assert.ok(line?.includes("agent.sock") && line.includes(disk), line);
    // A refusal about the mount itself (the guest's s3fs said why) is the user's to read, as bad_request is.
    h1.failMount = new HostdError("bad_request", "s3fs did not mount /more");
    const r = await api("POST", `/v1/sandboxes/${id}/disks`, { disk_id: disk, mount_path: "/more" });
    h1.failMount = undefined;
    assert.equal(r.status, 200, r.text);
    assert.equal(
      (await views(id)).find((x) => x.mount_path === "/more")?.mount_error,
      "s3fs did not mount /more",
    );
    await api("DELETE", `/v1/sandboxes/${id}`);
  });

  test("a mount path under a system dir is a 400 under the field the client sent", async () => {
    const id = await create("h1", []);
    const attach = await api("POST", `/v1/sandboxes/${id}/disks`, { disk_id: disk, mount_path: "/etc/x" });
    assert.equal(attach.status, 400, attach.text);
    assert.deepEqual(attach.json, {
      status: "fail",
      data: { "disk.mount_path": "mount_path must not be under /etc" },
    });
    const made = await api("POST", "/v1/sandboxes", {
      shape: "s-1vcpu-256mb",
      rootfs: "debian:12",
      disks: [{ disk_id: disk, mount_path: "/data/../x" }],
    });
    assert.equal(made.status, 400, made.text);
    assert.deepEqual(made.json, {
      status: "fail",
      data: { "disks.mount_path": "mount_path must not contain . or .." },
    });
    await api("DELETE", `/v1/sandboxes/${id}`);
  });

  /** A create with one disk, `during` run while its VM boots; its answer once the VM is up. */
  const bootWhile = async (diskName: string, during: () => Promise<void>) => {
    let boot!: () => void;
    h1.booting = new Promise((r) => {
      boot = r;
    });
    const creates = () => h1.calls.filter((c) => c.method === "create").length;
    const before = creates();
    const pending = api("POST", "/v1/sandboxes", {
      shape: "s-1vcpu-256mb",
      rootfs: "debian:12",
      host_id: "h1",
      disks: [{ disk_id: diskName, mount_path: "/data" }],
    });
    for (let i = 0; i < 200 && creates() === before; i++) await sleep(20);
    assert.equal(creates(), before + 1, "the VM is booting");
    await during();
    h1.booting = undefined;
    boot();
    return pending;
  };

  test("a disk deleted while the VM boots: the create answers its sandbox, the attachment its mount_error", async () => {
    for (const again of [false, true]) {
      const gone = await register("short-lived");
      let other = "";
      const mountsBefore = h1.mounts.length;
      const r = await bootWhile("short-lived", async () => {
        const del = await api("DELETE", `/v1/disks/${gone}`);
        assert.equal(del.status, 200, del.text);
        // The name registered again is another bucket's registration: the booting sandbox must not get it.
        if (again) other = await register("short-lived");
      });
      assert.equal(r.status, 200, r.text);
      const id = r.json.data.id as string;
      assert.equal((await api("GET", `/v1/sandboxes/${id}`)).json.data.status, "running");
      assert.deepEqual(await views(id), [
        {
          disk_id: gone,
          name: "short-lived",
          kind: "s3",
          config: { bucket: "data", endpoint: s3.endpoint, use_path_style: true },
          mount_path: "/data",
          mount_status: "error",
          mount_error: `disk ${gone} not found`,
        },
      ]);
      assert.equal(h1.mounts.length, mountsBefore, "nothing was mounted");
      if (again) {
        // Nor once its host comes back from being down, when its running sandboxes' disks are mounted again.
        h1.down = true;
        await health(h1, false);
        h1.down = false;
        await health(h1, true);
        await sleep(200);
        assert.deepEqual(
          h1.mounts.slice(mountsBefore).filter((m) => m.id === id),
          [],
          "the remount leaves the deleted disk's attachment alone",
        );
        assert.equal((await views(id))[0]?.mount_error, `disk ${gone} not found`);
      }
      await api("DELETE", `/v1/sandboxes/${id}`);
      if (other) assert.equal((await api("DELETE", `/v1/disks/${other}`)).status, 200);
    }
  });

  test("a host gone while the VM boots: the create answers its sandbox, the attachment says why", async () => {
    // Down (as the health check would mark it, and it cannot mark it back meanwhile) once its VM booted.
    const r = await bootWhile("d1", async () => {
      h1.down = true;
      srv.app.hosts.byId("h1")!.healthy = false;
    });
    assert.equal(r.status, 200, r.text);
    // Read in the store: the listing asks the host, which is down.
    const [v] = srv.app.disks.views(r.json.data.id);
    assert.equal(v?.mount_status, "error");
    assert.match(String(v?.mount_error), /^no usable host: h1: host daemon is unreachable/);
    h1.down = false;
    await health(h1, true);
    for (let i = 0; i < 50 && srv.app.disks.views(r.json.data.id)[0]?.mount_status !== "mounted"; i++)
      await sleep(50);
    assert.equal((await views(r.json.data.id))[0]?.mount_status, "mounted", "mounted once the host is back");
    await api("DELETE", `/v1/sandboxes/${r.json.data.id}`);
  });

  test("a rotation skips a down host, which gets the new keys once it is back; a failing host is a 503", async () => {
    const a = await create("h1", [{ disk_id: disk, mount_path: "/data" }]);
    const b = await create("h2", [{ disk_id: disk, mount_path: "/data" }]);
    h2.down = true;
    await health(h2, false);
    const rot = await api("PATCH", "/v1/disks/d1", {
      credentials: { ...S3_KEYS, access_key: "AKIAROTATED00001" },
    });
    assert.equal(rot.status, 200, rot.text);
    assert.deepEqual(h1.credentials.at(-1), { diskId: disk, accessKey: "AKIAROTATED00001" });
    assert.equal(h2.credentials.length, 0);
    h2.down = false;
    await health(h2, true);
    for (let i = 0; i < 50 && !h2.mounts.some((m) => m.access_key === "AKIAROTATED00001"); i++)
      await sleep(50);
    assert.deepEqual(
      h2.mounts.filter((m) => m.access_key === "AKIAROTATED00001").map((m) => [m.id, m.mount_path]),
      [[b, "/data"]],
      "mounted again with the new keys when it came back",
    );
    // A host that counts as healthy and still fails: the others get the keys, the client a 503 to retry.
    h2.failCredentials = new HostdError(
      "unreachable",
      "host daemon http://10.0.0.9:7070 is unreachable: reset",
    );
    const flaky = await api("PATCH", "/v1/disks/d1", { credentials: S3_KEYS });
    assert.equal(flaky.status, 503, flaky.text);
    assert.equal(flaky.json.status, "error");
    assert.ok(!flaky.text.includes("10.0.0.9"), flaky.text);
    assert.deepEqual(h1.credentials.at(-1), { diskId: disk, accessKey: S3_KEYS.access_key });
    h2.failCredentials = undefined;
    const retried = await api("PATCH", "/v1/disks/d1", { credentials: S3_KEYS });
    assert.equal(retried.status, 200, retried.text);
    assert.deepEqual(h2.credentials.at(-1), { diskId: disk, accessKey: S3_KEYS.access_key });
    await api("DELETE", `/v1/sandboxes/${a}`);
    await api("DELETE", `/v1/sandboxes/${b}`);
  });
});
