// What the API benches share (run.js, parts.js): the seeded database, the pinned processes, the load
// generator, the CPU clock of a process.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const dist = join(root, "packages/server/dist");
export const KEY = `skp_bench${"x".repeat(28)}`;

/** `rows` sandboxes of one user whose API key is KEY, in a fresh database under `dir`; their ids. */
export async function seed(dir, rows) {
  const { SqliteStore } = await import(join(dist, "store/sqlite.js"));
  const { newSandboxId } = await import(join(dist, "ulid.js"));
  const store = SqliteStore.open(join(dir, "db.sqlite"));
  const user = await store.createUser("admin");
  await store.addApiKey(user.id, KEY);
  const now = new Date().toISOString();
  const ids = [];
  for (let i = 0; i < rows; i++) {
    const id = newSandboxId();
    ids.push(id);
    await store.insertSandbox({
      id,
      user_id: user.id,
      name: `bench-${i}`,
      status: i % 3 === 0 ? "paused" : "running",
      shape: "s-1vcpu-256mb",
      rootfs: "devbox:1",
      vcpu: 1,
      mem_mib: 256,
      disk_mib: 10240,
      region: "local",
      ip: `10.201.${i >> 8}.${i & 255}`,
      spawn_ms: 180.5,
      created_at: now,
      running_at: now,
      ingress_enabled: false,
      egress: ["api.example.com:443"],
      envs: { TOKEN: "secret", MODE: "bench" },
      ssh_pubkeys: [],
      bandwidth_quota_bytes: 5 * 1024 ** 3,
      bandwidth_used_bytes: 0,
      bandwidth_ingress_bytes: 0,
      last_activity_at: Date.now(),
    });
  }
  await store.close();
  return ids;
}

/**
 * Pinning, where the machine has ≥ 2 CPUs and `taskset` (and `wanted`): this process (the load generator)
 * on CPU 0, the servers `spawnNode` starts on CPU 1 — the same core for every server, and the client never
 * preempts the server it measures.
 */
export function pinning(wanted = true) {
  const pin = wanted && availableParallelism() >= 2 && spawnSync("taskset", ["-V"]).status === 0;
  if (pin) spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
  const spawnNode = (args, opts) =>
    pin
      ? spawn("taskset", ["-c", "1", process.execPath, ...args], opts)
      : spawn(process.execPath, args, opts);
  return { pin, spawnNode };
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * One stretch of load: `connections` keep-alive sockets, each looping request → full response → next
 * request, for `seconds`; each response's latency in ms goes to `lat` when given.
 */
export async function load(port, pathFor, seconds, { connections = 8, lat } = {}) {
  let errors = 0;
  let non200 = 0;
  let n = 0;
  const deadline = performance.now() + seconds * 1000;
  const conn = () =>
    new Promise((resolve) => {
      const sock = connect(port, "127.0.0.1");
      sock.setNoDelay(true);
      let buf = Buffer.alloc(0);
      let t0 = 0;
      const send = () => {
        if (performance.now() >= deadline) {
          sock.end();
          return;
        }
        t0 = performance.now();
        sock.write(`GET ${pathFor()} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: ${KEY}\r\n\r\n`);
      };
      sock.on("connect", send);
      sock.on("data", (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
          const h = buf.indexOf("\r\n\r\n");
          if (h === -1) return;
          const head = buf.subarray(0, h).toString("latin1");
          const m = /content-length:\s*(\d+)/i.exec(head);
          const len = m ? Number(m[1]) : 0;
          if (buf.length < h + 4 + len) return;
          if (!head.startsWith("HTTP/1.1 200")) non200++;
          buf = buf.subarray(h + 4 + len);
          lat?.push(performance.now() - t0);
          n++;
          send();
        }
      });
      sock.on("error", () => {
        errors++;
        resolve();
      });
      sock.on("close", () => resolve());
    });
  const t = performance.now();
  await Promise.all(Array.from({ length: connections }, conn));
  return { n, seconds: (performance.now() - t) / 1000, errors, non200 };
}
