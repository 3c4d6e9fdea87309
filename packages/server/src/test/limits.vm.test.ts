/** Per-tenant limits with real VMs: the running-sandbox cap answers 403 before anything is recorded. */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { CreateosSandboxClient, CreateosSandboxPermissionError } from "@nodeops-createos/sandbox";
import { destroyAll, startEngineServer } from "./engine-helpers.js";
import { type ServerProc, call, cleanup } from "./helpers.js";

let s: ServerProc | undefined;

after(async () => {
  if (s) await destroyAll(s, [s.adminKey]);
  await s?.stop();
  if (s) cleanup(s.dataDir);
});

test(
  "max running sandboxes per tenant → 403; resume is held to it too",
  { timeout: 30 * 60_000 },
  async () => {
    s = await startEngineServer({ CREATEOS_SANDBOX_MAX_RUNNING_PER_TENANT: "1" });
    const client = new CreateosSandboxClient({ apiKey: s.adminKey, baseUrl: s.url, retry: false });
    const first = await client.createSandbox({ shape: "s-1vcpu-256mb" });
    try {
      const before = (await client.listSandboxes()).length;
      const err = await client.createSandbox({ shape: "s-1vcpu-256mb" }).catch((e) => e);
      assert.ok(err instanceof CreateosSandboxPermissionError, String(err));
      assert.match(err.message, /running sandbox limit reached \(1\)/);
      assert.equal((await client.listSandboxes()).length, before, "a refused create records nothing");
      await first.pause();
      await first.waitUntilPaused({ timeoutMs: 60_000 });
      // A paused sandbox holds no VM: a new one fits, and then the paused one cannot resume.
      const second = await client.createSandbox({ shape: "s-1vcpu-256mb" });
      const res = await call(s.url, "POST", `/v1/sandboxes/${first.id}/resume`, { key: s.adminKey });
      assert.equal(res.status, 403);
      assert.equal((await client.getSandbox(first.id)).status, "paused");
      await second.destroy();
      await second.waitUntilDestroyed({ timeoutMs: 60_000 });
    } finally {
      await first.destroy().catch(() => undefined);
      await first.waitUntilDestroyed({ timeoutMs: 60_000 }).catch(() => undefined);
    }
  },
);
