import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import {
  type Base,
  type Listing,
  conflictName,
  ignored,
  parseRemoteList,
  parseSha256sum,
  plan,
  scanLocal,
} from "./sync.js";

const f = (hash: string, mtime = 100, size = 1) => ({ hash, mtime, size });
const listing = (o: Record<string, ReturnType<typeof f>>): Listing => new Map(Object.entries(o));
const base = (o: Record<string, string>): Base => new Map(Object.entries(o));
const ops = (a: ReturnType<typeof plan>) =>
  a.map((x) => `${x.op}:${x.path}${"winner" in x ? `:${x.winner}` : ""}`);

describe("sync plan", () => {
  it("first reconcile: copies one-sided files, never deletes, newest wins on differences", () => {
    const a = plan(
      listing({ a: f("1"), both: f("x", 200), same: f("s") }),
      listing({ b: f("2"), both: f("y", 300), same: f("s") }),
      base({}),
    );
    assert.deepEqual(ops(a), ["push:a", "pull:b", "conflict:both:remote", "same:same"]);
  });

  it("propagates one-sided edits against the base", () => {
    const b = base({ l: "old", r: "old" });
    assert.deepEqual(
      ops(plan(listing({ l: f("new"), r: f("old") }), listing({ l: f("old"), r: f("new") }), b)),
      ["push:l", "pull:r"],
    );
  });

  it("propagates deletes only when the other side is unchanged", () => {
    const b = base({ gone_local: "h", gone_remote: "h", edited: "h" });
    const a = plan(listing({ gone_remote: f("h"), edited: f("h2") }), listing({ gone_local: f("h") }), b);
    assert.deepEqual(ops(a), ["push:edited", "delete-remote:gone_local", "delete-local:gone_remote"]);
  });

  it("both changed since the base: conflict, newest mtime wins, ties go local", () => {
    const b = base({ x: "h" });
    assert.deepEqual(ops(plan(listing({ x: f("l", 500) }), listing({ x: f("r", 400) }), b)), [
      "conflict:x:local",
    ]);
    assert.deepEqual(ops(plan(listing({ x: f("l", 400) }), listing({ x: f("r", 401) }), b)), [
      "conflict:x:remote",
    ]);
    assert.deepEqual(ops(plan(listing({ x: f("l", 400) }), listing({ x: f("r", 400) }), b)), [
      "conflict:x:local",
    ]);
  });

  it("forgets paths gone from both sides and is quiet when in sync", () => {
    assert.deepEqual(ops(plan(listing({}), listing({}), base({ old: "h" }))), ["forget:old"]);
    assert.deepEqual(plan(listing({ a: f("h") }), listing({ a: f("h", 999) }), base({ a: "h" })), []);
  });

  it("names conflict copies with a UTC timestamp", () => {
    assert.equal(
      conflictName("dir/a.txt", new Date("2026-11-22T16:05:01.123Z")),
      "dir/a.txt.conflict-20261122T160501Z",
    );
  });
});

describe("sync listings", () => {
  it("parses remote stat and sha256sum output", () => {
    assert.deepEqual(
      parseRemoteList("12 1700000000 ./a b.txt\n0 1700000001 ./d/e\ngarbage\n5 1 ./.git/x\n"),
      [
        { path: "a b.txt", size: 12, mtime: 1700000000 },
        { path: "d/e", size: 0, mtime: 1700000001 },
      ],
    );
    const h = "a".repeat(64);
    assert.deepEqual(
      [...parseSha256sum(`${h}  ./a b.txt\n${h} *./bin\n`).entries()],
      [
        ["a b.txt", h],
        ["bin", h],
      ],
    );
  });

  it("skips VCS dirs and partial downloads", () => {
    assert.equal(ignored(".git/config"), true);
    assert.equal(ignored("sub/.hg/x"), true);
    assert.equal(ignored("a/.f.txt.createos-sync.123"), true);
    assert.equal(ignored("src/git.ts"), false);
  });

  it("scans a local tree and reuses hashes of unchanged files", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cli-sync-"));
    try {
      fs.mkdirSync(path.join(dir, "sub/.git"), { recursive: true });
      fs.writeFileSync(path.join(dir, "a.txt"), "hello");
      fs.writeFileSync(path.join(dir, "sub/b.txt"), "world");
      fs.writeFileSync(path.join(dir, "sub/.git/HEAD"), "ref");
      const first = scanLocal(dir, new Map());
      assert.deepEqual([...first.keys()].sort(), ["a.txt", "sub/b.txt"]);
      assert.equal(
        first.get("a.txt")?.hash,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
      );
      const fake = new Map(first);
      fake.set("a.txt", {
        ...(first.get("a.txt") as { hash: string; size: number; mtime: number }),
        hash: "cached",
      });
      assert.equal(scanLocal(dir, fake).get("a.txt")?.hash, "cached");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
