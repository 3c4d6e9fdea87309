import assert from "node:assert/strict";
import { test } from "node:test";
import { ExecOutput } from "./exec-output.js";

const tick = () => new Promise((r) => setImmediate(r));

test("ExecOutput: one chunk at a time while a promise is pending, in order, credit as each is taken", async () => {
  const got: string[] = [];
  const holds: (() => void)[] = [];
  const taken: number[] = [];
  const out = new ExecOutput(
    {
      onStdout: (c) => {
        got.push(`o:${c}`);
        return new Promise<void>((r) => holds.push(r));
      },
      onStderr: (c) => {
        got.push(`e:${c}`);
      },
    },
    (held) => taken.push(held),
    () => assert.fail("no failure"),
  );
  out.push(false, Buffer.from("a"));
  out.push(true, Buffer.from("bb"));
  out.push(false, Buffer.from("ccc"));
  assert.deepEqual(got, ["o:a"], "the rest waits for the first promise");
  assert.equal(out.held, 6);
  let idle = false;
  void out.idle().then(() => {
    idle = true;
  });
  holds.shift()!();
  await tick();
  assert.deepEqual(got, ["o:a", "e:bb", "o:ccc"]);
  assert.equal(out.held, 3, "a and bb were taken, ccc is held");
  assert.equal(taken.at(-1), 3);
  assert.equal(idle, false);
  holds.shift()!();
  await tick();
  assert.equal(out.held, 0);
  assert.equal(idle, true);
});

test("ExecOutput: a rejected promise or a throw fails it and drops the rest; clear drops what waits", async () => {
  const errors: unknown[] = [];
  const out = new ExecOutput(
    { onStdout: () => Promise.reject(new Error("gone")) },
    () => {},
    (e) => errors.push(e),
  );
  out.push(false, Buffer.from("x"));
  out.push(false, Buffer.from("y"));
  await tick();
  assert.equal(errors.length, 1);
  assert.equal(out.held, 0);
  const thrown = new ExecOutput(
    {
      onStdout: () => {
        throw new Error("bad");
      },
    },
    () => {},
    (e) => errors.push(e),
  );
  thrown.push(false, Buffer.from("x"));
  assert.equal(errors.length, 2);
  let calls = 0;
  const held = new ExecOutput(
    {
      onStdout: () => {
        calls++;
        return new Promise(() => {});
      },
    },
    () => {},
    () => {},
  );
  held.push(false, Buffer.from("a"));
  held.push(false, Buffer.from("b"));
  held.clear();
  await held.idle();
  held.push(false, Buffer.from("c"));
  assert.equal(calls, 2, "after clear the next chunk is delivered at once; b was dropped");
});
