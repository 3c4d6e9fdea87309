/** PTYs against the real agent in --listen mode: interactive shell, resize, login shell, signals. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { assertIdle, until, useAgent } from "./testagent.js";

const ta = useAgent();
const { client } = ta;

test("pty: interactive shell, resize, exit", async (t) => {
  const pty = await client.openPty({ argv: ["sh"], rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  assert.ok(pty.pid > 0);
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("echo h''i\n");
  // The tty echoes the input (h''i), the shell prints hi.
  assert.ok(await until(() => out.includes("hi\r\n"), 5000), `saw hi in ${JSON.stringify(out)}`);
  pty.stream.write("stty size\n");
  assert.ok(await until(() => out.includes("24 80"), 5000), `initial size in ${JSON.stringify(out)}`);
  pty.resize(40, 132);
  await new Promise((r) => setTimeout(r, 50));
  pty.stream.write("stty size; echo $TERM\n");
  assert.ok(await until(() => out.includes("40 132"), 5000), `resized in ${JSON.stringify(out)}`);
  assert.ok(await until(() => out.includes("xterm-256color"), 5000));
  pty.stream.write("exit 4\n");
  assert.deepEqual(await pty.exited, { exit_code: 4 });
});

test("pty: no argv gives a login shell", async (t) => {
  const pty = await client.openPty({ rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("echo shell=$0; exit 0\n");
  assert.equal((await pty.exited).exit_code, 0);
  assert.match(out, /shell=-?(\/bin\/)?(ba)?sh/);
});

test("pty: signal reaches the foreground job", async (t) => {
  const pty = await client.openPty({ argv: ["sh"], rows: 24, cols: 80 });
  t.after(() => pty.stream.destroy());
  let out = "";
  pty.stream.on("data", (b: Buffer) => {
    out += b.toString();
  });
  pty.stream.write("sleep 30\n");
  await new Promise((r) => setTimeout(r, 300));
  pty.signal("SIGINT");
  // The shell survives (it was not the target, or it ignores SIGINT when interactive) and sees 130.
  pty.stream.write("echo after-$?\n");
  assert.ok(await until(() => out.includes("after-130"), 5000), `interrupted in ${JSON.stringify(out)}`);
  pty.stream.write("exit\n");
  assert.equal((await pty.exited).exit_code, 0);
});

test("the agent is still healthy and idle", () => assertIdle(ta));
