/**
 * The HostDaemon conformance suite against a RemoteHostDaemon: the same LocalHostDaemon served by
 * `createHostdServer` on loopback and driven over the wire (HOSTD-PROTOCOL.md), so every capability,
 * cancellation, backpressure and error check of the suite also holds across the network.
 *
 *   node --test packages/hostd/dist/conformance/remote.vm.test.js
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { RemoteHostDaemon } from "@createos-sandbox/protocol";
import { LocalHostDaemon } from "../index.js";
import { createHostdServer, listenHostd } from "../remote/serve.js";
import { hostFootprint, openOpts, tempDataDir } from "../testutil.js";
import { conformance } from "./suite.js";

conformance("RemoteHostDaemon", async () => {
  const dataDir = tempDataDir("conf-remote");
  const local = await LocalHostDaemon.open({ ...openOpts(dataDir), warmPool: 0 });
  const token = randomBytes(24).toString("hex");
  const server = createHostdServer(local, { token });
  const url = await listenHostd(server, "127.0.0.1:0");
  const daemon = new RemoteHostDaemon(url, { token });
  return {
    daemon,
    async close() {
      await daemon.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await local.close();
      const left = hostFootprint(dataDir);
      rmSync(dataDir, { recursive: true, force: true });
      assert.deepEqual(left.qemu, [], "QEMU processes left");
      assert.deepEqual(left.vmFiles, [], "VM dirs left");
    },
  };
});
