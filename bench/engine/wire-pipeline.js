#!/usr/bin/env node
// What a client that pipelines its exec streams would save, without VMs: the wire tests' scripted daemon
// served by createHostdServer in a child process, and four exchanges timed in turn from this one:
//   current       RemoteHostDaemon.exec: new connection, upgrade, wait for 101, request frame, OPEN, RESULT
//   pipelined     new connection, then the upgrade request and the request frame in one write
//   preconnected  the same on a connection opened before the clock starts
//   list          RemoteHostDaemon.list(): one JSON call on a keep-alive connection
// The server already takes frames that arrive behind the upgrade request (it unshifts `head`).
//
//   node bench/engine/wire-pipeline.js [--reps 300]
import { fork } from "node:child_process";
import { connect } from "node:net";
import { parseArgs } from "node:util";
import * as P from "../../packages/protocol/dist/index.js";
import { f2, p50, p95 } from "./lib.js";

const TOKEN = "bench-token-0123456789abcdef";
const { values: args } = parseArgs({
  options: { reps: { type: "string", default: "300" }, child: { type: "boolean", default: false } },
});

if (args.child) {
  const { ScriptedDaemon } = await import("../../packages/hostd/dist/remote/scripted.js");
  const { createHostdServer, listenHostd } = await import("../../packages/hostd/dist/remote/serve.js");
  const d = new ScriptedDaemon();
  await d.create({
    sandbox_id: "a",
    hostname: "a",
    image: "debian:12",
    vcpu: 1,
    mem_mib: 256,
    disk_mib: 1024,
    envs: {},
  });
  process.send(await listenHostd(createHostdServer(d, { token: TOKEN }), "127.0.0.1:0"));
  process.once("disconnect", () => process.exit(0));
} else {
  const child = fork(new URL(import.meta.url), ["--child"]);
  const url = new URL(await new Promise((r) => child.once("message", r)));
  const remote = new P.RemoteHostDaemon(`http://${url.host}`, { token: TOKEN });
  const opened = () =>
    new Promise((resolve) => {
      const s = connect(Number(url.port), url.hostname, () => resolve(s));
    });
  const head = `GET ${P.HOSTD_ROUTES.exec} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${TOKEN}\r\nconnection: Upgrade\r\nupgrade: ${P.HOSTD_UPGRADE}\r\n\r\n`;
  const request = P.encodeWireFrame(
    P.F.REQUEST,
    JSON.stringify({ sandbox_id: "a", argv: ["true"], stdin: false }),
  );
  /** The upgrade request and the request frame in one write; resolves at the RESULT frame. */
  const pipelined = (s) =>
    new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      let dec;
      s.on("data", (chunk) => {
        let rest = chunk;
        if (!dec) {
          buf = Buffer.concat([buf, chunk]);
          const i = buf.indexOf("\r\n\r\n");
          if (i < 0) return;
          if (!buf.subarray(0, 12).toString().includes(" 101")) return reject(new Error(buf.toString()));
          dec = new P.WireFrameDecoder();
          rest = buf.subarray(i + 4);
        }
        for (const f of dec.push(rest)) if (f.type === P.F.RESULT) resolve(s.end());
      });
      s.write(Buffer.concat([Buffer.from(head), request]));
    });
  const s = { current: [], pipelined: [], preconnected: [], list: [] };
  const time = async (key, fn) => {
    const t0 = performance.now();
    await fn();
    s[key].push(performance.now() - t0);
  };
  for (let i = 0; i < Number(args.reps); i++) {
    await time("current", () => remote.exec("a", { argv: ["true"] }));
    await time("pipelined", async () => pipelined(await opened()));
    const pre = await opened();
    await time("preconnected", () => pipelined(pre));
    await time("list", () => remote.list());
  }
  console.log("| exchange | p50 ms | p95 ms |\n|---|---|---|");
  for (const [k, v] of Object.entries(s)) console.log(`| ${k} | ${f2(p50(v))} | ${f2(p95(v))} |`);
  await remote.close();
  child.disconnect();
}
