#!/usr/bin/env node
// Where a remote exec's extra time goes: one 256 MiB VM on an in-process daemon and one on a daemon in
// another process (serve-daemon.js, through RemoteHostDaemon), `exec true` on both, interleaved, with the
// remote exchange split into phases by timestamps taken in this process:
//   connect   — a new TCP connection (upgrades never reuse a pooled one)
//   upgraded  — upgrade request → 101 answer
//   open      — request frame sent → OPEN frame back (the daemon starts the command after sending OPEN)
//   result    — OPEN → RESULT frame (the daemon's exec, its `exec_ms`, is inside this phase)
// plus `list()` (one pooled keep-alive JSON call) as the fixed cost of an exchange, right after the exec
// and after 30 ms of idling.
//
//   node bench/engine/wire-profile.js [--reps 100] [--image debian:12]
import { parseArgs } from "node:util";
import { f1, firstExec, log, p50, p95, sleep, spec } from "./lib.js";
import { startLocal, startRemote } from "./paired.js";

const { values: args } = parseArgs({
  options: { reps: { type: "string", default: "100" }, image: { type: "string", default: "debian:12" } },
});
const REPS = Number(args.reps);
const now = () => performance.now();

/** Timestamps of the phases of each upgrade-based exchange made through `remote`. */
function instrument(remote) {
  const t = remote.t;
  const marks = {};
  const start = t.start.bind(t);
  t.start = (...a) => {
    const req = start(...a);
    req.once("socket", (sock) =>
      sock.once("connect", () => {
        marks.connected = now();
      }),
    );
    return req;
  };
  const upgrade = t.upgrade.bind(t);
  t.upgrade = async (path) => {
    marks.start = now();
    const conn = await upgrade(path);
    marks.upgraded = now();
    const onFrame = conn.onFrame.bind(conn);
    conn.onFrame = (h) =>
      onFrame((f) => {
        marks[`f${f.type}`] ??= now();
        h(f);
      });
    return conn;
  };
  return marks;
}

const local = await startLocal(args.image);
const remote = await startRemote(args.image);
const s = {
  local: [],
  localOwn: [],
  remote: [],
  remoteOwn: [],
  connected: [],
  upgraded: [],
  open: [],
  result: [],
  list: [],
  listIdle: [],
};
try {
  const vms = [spec(args.image, 256), spec(args.image, 256)];
  await local.d.create(vms[0]);
  await remote.d.create(vms[1]);
  await firstExec(local.d, vms[0].sandbox_id);
  await firstExec(remote.d, vms[1].sandbox_id);
  const { F } = await import("../../packages/protocol/dist/index.js");
  log(`${REPS} × exec true on each side…`);
  const m = instrument(remote.d);
  for (let i = 0; i < REPS; i++) {
    await Promise.all([local.poolIdle(), remote.poolIdle()]);
    let t0 = now();
    const a = await local.d.exec(vms[0].sandbox_id, { argv: ["true"] });
    s.local.push(now() - t0);
    s.localOwn.push(a.exec_ms);
    for (const k of Object.keys(m)) delete m[k];
    t0 = now();
    const b = await remote.d.exec(vms[1].sandbox_id, { argv: ["true"] });
    const t1 = now();
    s.remote.push(t1 - t0);
    s.remoteOwn.push(b.exec_ms);
    s.connected.push(m.connected - t0);
    s.upgraded.push(m.upgraded - m.connected);
    s.open.push(m[`f${F.OPEN}`] - m.upgraded);
    s.result.push(m[`f${F.RESULT}`] - m[`f${F.OPEN}`]);
    t0 = now();
    await remote.d.list();
    s.list.push(now() - t0);
    // The same call after both processes sat idle as long as an exec takes: is the cost the exchange, or
    // waking two idle processes on a busy machine?
    await sleep(30);
    t0 = now();
    await remote.d.list();
    s.listIdle.push(now() - t0);
  }
  const line = (name, xs) => console.log(`| ${name} | ${f1(p50(xs))} | ${f1(p95(xs))} |`);
  console.log("\n| exec `true` (ms) | p50 | p95 |\n|---|---|---|");
  line("in-process: caller's time", s.local);
  line("in-process: daemon's exec_ms", s.localOwn);
  line("remote: caller's time", s.remote);
  line("remote: daemon's exec_ms", s.remoteOwn);
  line("remote phase: TCP connect", s.connected);
  line("remote phase: upgrade request → 101", s.upgraded);
  line("remote phase: request frame → OPEN", s.open);
  line("remote phase: OPEN → RESULT", s.result);
  line("remote: `list()` call, right after the exec", s.list);
  line("remote: `list()` call, after 30 ms idle", s.listIdle);
} finally {
  await remote.close();
  await local.close();
}
