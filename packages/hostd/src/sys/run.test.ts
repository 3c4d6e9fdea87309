import assert from "node:assert/strict";
import { test } from "node:test";
import { SysError, run, runRaw } from "./run.js";

test("run: argument arrays, no shell, lines streamed from stdout and stderr", async () => {
  const lines: [string, string][] = [];
  const r = await run(
    "sh",
    ["-c", 'printf "%s\\n" "$1" "$2"; printf "err\\nlast" >&2', "sh", "a b", "$HOME"],
    {
      onLine: (l, s) => lines.push([s, l]),
    },
  );
  assert.deepEqual(
    lines.filter(([s]) => s === "stdout"),
    [
      ["stdout", "a b"],
      ["stdout", "$HOME"],
    ],
    "arguments reach the program unsplit and unexpanded",
  );
  assert.deepEqual(
    lines.filter(([s]) => s === "stderr"),
    [
      ["stderr", "err"],
      ["stderr", "last"],
    ],
    "the last line counts even without a newline",
  );
  assert.equal(r.stdout, "a b\n$HOME\n");
  assert.equal(r.stderr, "err\nlast");
});

test("run: stdin input; a failure names the command line, exit code and stderr tail", async () => {
  assert.equal((await run("cat", [], { input: "fed\n" })).stdout, "fed\n");
  const err = await run("sh", ["-c", "seq 1 40 >&2; exit 3", "probe-arg"]).catch((e: unknown) => e);
  assert.ok(err instanceof SysError, String(err));
  assert.equal(err.exitCode, 3);
  assert.deepEqual(err.command, ["sh", "-c", "seq 1 40 >&2; exit 3", "probe-arg"]);
  assert.match(err.message, /^sh -c seq 1 40 >&2; exit 3 probe-arg failed \(exit 3\): 1\n2\n3\n…\n29\n/);
  assert.match(err.message, /\n40$/);
  const raw = await runRaw("sh", ["-c", "exit 5"]);
  assert.equal(raw.code, 5, "runRaw resolves whatever the exit");
  await assert.rejects(run("createos-no-such-program", []), /createos-no-such-program is not installed/);
});

test("run: abort stops the program promptly and fails as aborted", async () => {
  const abort = new AbortController();
  const t0 = Date.now();
  setTimeout(() => abort.abort(), 100);
  await assert.rejects(
    run("sleep", ["30"], { signal: abort.signal }),
    (e: unknown) => e instanceof SysError && /aborted/.test(e.message),
  );
  assert.ok(Date.now() - t0 < 5000, "aborted promptly");
});

test("run: a timeout kills the whole process group, children included", async () => {
  const t0 = Date.now();
  // the child sleeps in a grandchild: killing only `sh` would leave it holding stdout open
  const err = await run("sh", ["-c", "sleep 30; echo never"], { timeoutMs: 200 }).catch((e: unknown) => e);
  assert.ok(err instanceof SysError && /timed out \(200 ms\)/.test(err.message), String(err));
  assert.ok(Date.now() - t0 < 5000, "the run ended at the timeout, not when sleep would have");
  const raw = await runRaw("sh", ["-c", "sleep 30"], { timeoutMs: 100 });
  assert.equal(raw.timedOut, true);
  assert.equal(raw.signal, "SIGKILL");
});
