/**
 * The HostDaemon conformance suite against the in-process LocalHostDaemon.
 *
 *   node --test packages/hostd/dist/conformance/local.vm.test.js
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { LocalHostDaemon } from "../index.js";
import { hostFootprint, openOpts, tempDataDir } from "../testutil.js";
import { conformance } from "./suite.js";

conformance("LocalHostDaemon", async () => {
  const dataDir = tempDataDir("conf");
  // No warm pool: a pooled VM is one more boot in the background that no test here would use.
  const daemon = await LocalHostDaemon.open({ ...openOpts(dataDir), warmPool: 0 });
  return {
    daemon,
    async close() {
      await daemon.close();
      // Beyond what the suite checks through the interface: nothing of this daemon is left on the host.
      const left = hostFootprint(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
      assert.deepEqual(left.qemu, [], "QEMU processes left");
      assert.deepEqual(left.vmFiles, [], "VM dirs left");
    },
  };
});
