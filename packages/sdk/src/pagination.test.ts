import assert from "node:assert/strict";
import { test } from "node:test";
import { CreateosSandboxError } from "./errors.js";
import { extractPage, paginate } from "./pagination.js";

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test("extractPage accepts the paginated, legacy and bare-array shapes", () => {
  assert.deepEqual(
    extractPage({ data: [1], pagination: { total: 5, limit: 1, offset: 0, count: 1 } }, undefined, "/p"),
    {
      items: [1],
      total: 5,
    },
  );
  assert.deepEqual(extractPage({ disks: [1, 2] }, "disks", "/p"), { items: [1, 2], total: undefined });
  assert.deepEqual(extractPage([3], undefined, "/p"), { items: [3], total: undefined });
  assert.throws(() => extractPage({ nope: 1 }, "disks", "/p"), CreateosSandboxError);
});

test("paginate walks by total and actual item count, not the requested size", async () => {
  const rows = Array.from({ length: 7 }, (_, i) => i);
  const calls: [number, number][] = [];
  // The server clamps every page to 3 rows whatever limit is asked.
  const fetchPage = async (limit: number, offset: number) => {
    calls.push([limit, offset]);
    const data = rows.slice(offset, offset + 3);
    return { data, pagination: { total: rows.length, limit: 3, offset, count: data.length } };
  };
  assert.deepEqual(await collect(paginate(fetchPage, { path: "/x" })), rows);
  assert.deepEqual(calls, [
    [500, 0],
    [500, 3],
    [500, 6],
  ]);
});

test("paginate honours cap (page size and early stop)", async () => {
  const calls: number[] = [];
  const fetchPage = async (limit: number, offset: number) => {
    calls.push(limit);
    const data = Array.from({ length: limit }, (_, i) => offset + i);
    return { data, pagination: { total: 1000, limit, offset, count: limit } };
  };
  assert.deepEqual(await collect(paginate(fetchPage, { path: "/x", cap: 4 })), [0, 1, 2, 3]);
  assert.deepEqual(calls, [4]);
  assert.deepEqual(await collect(paginate(fetchPage, { path: "/x", cap: 0 })), []);
});

test("paginate stops on an empty page or a missing total", async () => {
  let n = 0;
  const liar = async () => {
    n++;
    return { data: [], pagination: { total: 10 } };
  };
  assert.deepEqual(await collect(paginate(liar, { path: "/x" })), []);
  assert.equal(n, 1);
  let m = 0;
  const legacy = async () => {
    m++;
    return { templates: ["a", "b"] };
  };
  assert.deepEqual(await collect(paginate(legacy, { path: "/x", legacyKey: "templates" })), ["a", "b"]);
  assert.equal(m, 1);
});
