import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import ssh2 from "ssh2";
import type { SandboxRow, Store } from "../store/types.js";
import { LoginFailures, loadHostKey, matchingKey, resolveLogin } from "./auth.js";

const pub = () => ssh2.utils.generateKeyPairSync("ed25519").public;
const blob = (line: string) => Buffer.from(line.split(" ")[1]!, "base64");

test("failed logins are limited per source address; other addresses and a disabled limiter pass", async () => {
  const f = new LoginFailures(20, 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(f.blocked("192.0.2.1"), 0, `attempt ${i + 1} may go`);
    f.failed("192.0.2.1");
  }
  assert.ok(f.blocked("192.0.2.1") >= 1, "the burst is used up");
  assert.equal(f.blocked("192.0.2.2"), 0, "another address is not affected");
  // One token comes back after 1/20 s.
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(f.blocked("192.0.2.1"), 0);
  const off = new LoginFailures(0, 0);
  for (let i = 0; i < 100; i++) off.failed("192.0.2.1");
  assert.equal(off.blocked("192.0.2.1"), 0);
});

test("a key matches by its public blob, whatever its comment; lines that do not parse are skipped", () => {
  const a = pub();
  const b = pub();
  const row = { ssh_pubkeys: ["not a key", `${a.split(" ").slice(0, 2).join(" ")} laptop`] };
  assert.ok(matchingKey(row, blob(a)));
  assert.equal(matchingKey(row, blob(b)), undefined);
});

function storeOf(rows: Partial<SandboxRow>[]): Store {
  const all = rows as SandboxRow[];
  return {
    getSandbox: async (id: string) => all.find((r) => r.id === id),
    sandboxesInStatus: async (st: string[]) => all.filter((r) => st.includes(r.status)),
  } as unknown as Store;
}

test("the username is an id, or a name that one live sandbox listing the key has", async () => {
  const a = pub();
  const b = pub();
  const id1 = "sb-01jdx5k9v3m8q2w7e4r6t0y1aa";
  const id2 = "sb-01jdx5k9v3m8q2w7e4r6t0y1ab";
  const store = storeOf([
    { id: id1, name: "box", status: "running", ssh_pubkeys: [a] },
    { id: id2, name: "box", status: "paused", ssh_pubkeys: [b] },
    { id: "sb-01jdx5k9v3m8q2w7e4r6t0y1ac", name: "gone", status: "destroyed", ssh_pubkeys: [a] },
  ]);
  const got = async (user: string, key: string) => {
    const r = await resolveLogin(store, user, blob(key));
    return "refused" in r ? r.refused : r.row.id;
  };
  assert.equal(await got(id1, a), id1);
  assert.equal(await got(id1.replace("sb-", "sb_").toUpperCase(), a), id1, "either spelling of the id");
  assert.equal(await got(id1, b), "key not listed");
  assert.equal(await got("box", a), id1, "two tenants' boxes: the key decides");
  assert.equal(await got("box", b), id2, "a paused one logs in (its session says it is paused)");
  assert.equal(await got("gone", a), "unknown sandbox");
  assert.equal(await got("sb-00000000000000000000000000", a), "unknown sandbox");
  const both = storeOf([
    { id: id1, name: "box", status: "running", ssh_pubkeys: [a] },
    { id: id2, name: "box", status: "running", ssh_pubkeys: [a] },
  ]);
  const r = await resolveLogin(both, "box", blob(a));
  assert.ok("refused" in r && /several/.test(r.refused));
});

test("a name does not log in with a key that another account's live sandbox lists too", async () => {
  const a = pub();
  const mine = "sb-01jdx5k9v3m8q2w7e4r6t0y1aa";
  const store = storeOf([
    { id: mine, user_id: "alice", name: "dev", status: "running", ssh_pubkeys: [a] },
    {
      id: "sb-01jdx5k9v3m8q2w7e4r6t0y1ab",
      user_id: "alice",
      name: "ci",
      status: "running",
      ssh_pubkeys: [a],
    },
  ]);
  const ok = await resolveLogin(store, "dev", blob(a));
  assert.ok(!("refused" in ok) && ok.row.id === mine, "the same account's other sandboxes do not count");
  // Mallory copies Alice's public key onto a sandbox of her own (any name; here also `dev`, as when Alice's
  // is gone): by name neither is chosen; by id Alice still gets hers.
  const copied = storeOf([
    { id: mine, user_id: "alice", name: "dev", status: "running", ssh_pubkeys: [a] },
    {
      id: "sb-01jdx5k9v3m8q2w7e4r6t0y1ac",
      user_id: "mallory",
      name: "x",
      status: "paused",
      ssh_pubkeys: [a],
    },
  ]);
  const r = await resolveLogin(copied, "dev", blob(a));
  assert.ok("refused" in r && /more than one account/.test(r.refused), JSON.stringify(r));
  const byId = await resolveLogin(copied, mine, blob(a));
  assert.ok(!("refused" in byId) && byId.row.id === mine);
  const hers = storeOf([
    {
      id: "sb-01jdx5k9v3m8q2w7e4r6t0y1ac",
      user_id: "mallory",
      name: "dev",
      status: "running",
      ssh_pubkeys: [a],
    },
    {
      id: "sb-01jdx5k9v3m8q2w7e4r6t0y1ad",
      user_id: "alice",
      name: "old",
      status: "paused",
      ssh_pubkeys: [a],
    },
  ]);
  const lure = await resolveLogin(hers, "dev", blob(a));
  assert.ok("refused" in lure, "Alice's key on Mallory's `dev` while Alice holds it on a sandbox of hers");
});

test("the host key is made once (0600) and kept; a stored key that does not parse is made again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "hostkey-"));
  try {
    const first = await loadHostKey(dir);
    assert.ok(!(ssh2.utils.parseKey(first) instanceof Error));
    assert.equal(statSync(join(dir, "ssh-host-key")).mode & 0o777, 0o600);
    assert.equal(await loadHostKey(dir), first);
    writeFileSync(join(dir, "ssh-host-key"), "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n");
    const again = await loadHostKey(dir);
    assert.notEqual(again, first);
    assert.ok(!(ssh2.utils.parseKey(again) instanceof Error));
    assert.equal(readFileSync(join(dir, "ssh-host-key"), "utf8"), again);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
