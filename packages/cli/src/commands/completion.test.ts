import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { root } from "../cli.js";
import { completionScript, completionTable } from "./completion.js";

describe("completion", () => {
  it("knows every command path, including aliases", () => {
    const keys = completionTable(root).map((r) => r.key);
    for (const k of [
      "sandbox",
      "sb",
      "sandbox create",
      "sb exec",
      "sandbox firewall set",
      "sb network attach",
      "login",
      "completion",
    ]) {
      assert.ok(keys.includes(k), k);
    }
    const create = completionTable(root).find((r) => r.key === "sandbox create");
    assert.ok(create?.words.includes("--shape"));
    assert.ok(create?.words.includes("--output"));
    assert.equal(completionTable(root).find((r) => r.key === "sb exec")?.sandbox, true);
  });

  it("bash script is valid bash and completes sub-commands", () => {
    const script = completionScript("bash", root);
    assert.equal(spawnSync("bash", ["-n"], { input: script }).status, 0);
    const r = spawnSync(
      "bash",
      [
        "-c",
        `${script}\nCOMP_WORDS=(createos sandbox fi); COMP_CWORD=2; _createos; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.stdout.trim(), "firewall");
    const flags = spawnSync(
      "bash",
      [
        "-c",
        `${script}\nCOMP_WORDS=(createos sb create --sh); COMP_CWORD=3; _createos; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: "utf8" },
    );
    assert.equal(flags.stdout.trim(), "--shape");
  });

  it("zsh and fish scripts are produced", () => {
    assert.match(completionScript("zsh", root), /^#compdef createos/);
    const fish = completionScript("fish", root);
    assert.ok(fish.includes(`complete -c createos -n "__createos_is 'sandbox create'" -l shape`));
    assert.match(fish, /-l shape/);
  });

  it("rejects unknown shells", () => {
    assert.throws(() => completionScript("tcsh", root), /unsupported shell/);
  });
});
