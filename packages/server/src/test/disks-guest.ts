/**
 * Guest-side probes and the CLI runner for the S3 disks VM test (disks.vm.test.ts): python3 scripts that
 * count patterns (given on stdin, so no argv carries them) in s3fs's memory and on the guest's wire.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { call } from "./helpers.js";

const cliHelpers = fileURLToPath(new URL("../../../cli/dist/test/helpers.js", import.meta.url));

/** s3fs's memory: how many s3fs processes, then each stdin pattern's count over their readable mappings. */
export const MEM_PY = `import os, sys
pats = sys.stdin.buffer.read().split(b"\\n")
pids = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "s3fs"]
hits = [0] * len(pats)
for pid in pids:
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if perms[0] != "r":
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except (OSError, ValueError):
                continue
            hits = [h + data.count(p) for h, p in zip(hits, pats)]
print(len(pids), *hits)`;

/**
 * The mount's traffic as the guest's own root sees it: every frame on its interfaces (AF_PACKET) while a
 * write and a read go through the mount; the write's exit code, then each stdin pattern's count.
 */
export const WIRE_PY = `import socket, subprocess, sys, time
pats = sys.stdin.buffer.read().split(b"\\n")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.settimeout(0.2)
p = subprocess.Popen(["sh", "-c", sys.argv[1]])
buf, end = bytearray(), None
while end is None or time.time() < end:
    try:
        buf += s.recv(65535)
    except socket.timeout:
        pass
    if end is None and p.poll() is not None:
        end = time.time() + 1
print(p.returncode, *[buf.count(x) for x in pats])`;

/** A python3 script in the guest with argv and stdin (patterns stay off every argv); its stdout's numbers. */
export async function pyIn(
  url: string,
  key: string,
  id: string,
  code: string,
  args: string[],
  stdin: string,
): Promise<number[]> {
  const r = await call(url, "POST", `/v1/sandboxes/${id}/exec`, {
    key,
    body: { cmd: "python3", args: ["-c", code, ...args], stdin },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.data.result.exit_code, 0, r.json.data.result.stderr);
  return r.json.data.result.stdout.trim().split(" ").map(Number);
}

/** The built CLI, logged in to the server under a HOME of its own. */
export async function cliAs(url: string, key: string) {
  const h = await import(cliHelpers);
  const env = h.cleanEnv({ HOME: h.tempDir("disks-cli-"), TERM: "xterm-256color" });
  const run = async (args: string[]): Promise<string> => {
    const r = await h.runCli(args, { env, timeoutMs: 600_000 });
    assert.equal(r.code, 0, `createos ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  await run(["login", "--token", key, "--url", url]);
  /** A command's JSON answer (what the CLI prints off a terminal). */
  // biome-ignore lint/suspicious/noExplicitAny: the CLI's JSON
  const ok = async (args: string[], more: string[] = []): Promise<any> =>
    JSON.parse(await run([...args, ...more]));
  /** Runs a command that asks first in a terminal, answers yes, and expects `done` and exit 0. */
  const confirm = async (args: string[], question: RegExp, done: RegExp): Promise<void> => {
    const t = new h.Tmux(h.tmuxCommand(args), env);
    try {
      await t.waitFor(question);
      t.type("y");
      const screen: string = await t.waitFor(/\[exit \d+\]/, 120_000);
      assert.match(screen, done);
      assert.match(screen, /\[exit 0\]/);
    } finally {
      t.kill();
    }
  };
  /** A command run to completion, whatever its exit code. */
  const raw = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    h.runCli(args, { env, timeoutMs: 600_000 });
  return { ok, confirm, raw };
}
