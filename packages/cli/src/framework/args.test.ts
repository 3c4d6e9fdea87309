import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hoistGlobals, parseCommandArgs } from "./args.js";
import { UsageError } from "./errors.js";

describe("hoistGlobals", () => {
  it("takes global flags from anywhere before --", () => {
    const { globals, rest } = hoistGlobals(["sandbox", "list", "-o", "json", "--debug", "--all"], {});
    assert.equal(globals.output, "json");
    assert.equal(globals.debug, true);
    assert.deepEqual(rest, ["sandbox", "list", "--all"]);
  });

  it("accepts --flag=value and -ovalue forms", () => {
    assert.equal(hoistGlobals(["--output=table"], {}).globals.output, "table");
    assert.equal(hoistGlobals(["-ojson"], {}).globals.output, "json");
    assert.equal(hoistGlobals(["--sandbox-api-url", "http://x"], {}).globals.apiUrl, "http://x");
    assert.equal(hoistGlobals(["--api-key=skp_1"], {}).globals.apiKey, "skp_1");
  });

  it("leaves everything after -- alone", () => {
    const { globals, rest } = hoistGlobals(["sb", "exec", "box", "--", "ls", "-o", "json", "--help"], {});
    assert.equal(globals.output, undefined);
    assert.equal(globals.help, false);
    assert.deepEqual(rest, ["sb", "exec", "box", "--", "ls", "-o", "json", "--help"]);
  });

  it("reads CREATEOS_OUTPUT, NO_COLOR and CREATEOS_DEBUG; the flag wins over the env", () => {
    const env = { CREATEOS_OUTPUT: "json", NO_COLOR: "1", CREATEOS_DEBUG: "1" };
    const g = hoistGlobals([], env).globals;
    assert.equal(g.output, "json");
    assert.equal(g.noColor, true);
    assert.equal(g.debug, true);
    assert.equal(hoistGlobals(["-o", "table"], env).globals.output, "table");
  });

  it("rejects bad values as usage errors", () => {
    assert.throws(() => hoistGlobals(["-o", "yaml"], {}), UsageError);
    assert.throws(() => hoistGlobals(["--output"], {}), UsageError);
    assert.throws(() => hoistGlobals([], { CREATEOS_OUTPUT: "xml" }), UsageError);
  });
});

describe("parseCommandArgs", () => {
  const specs = [
    { name: "force", short: "y", aliases: ["yes"], type: "boolean" as const, description: "" },
    { name: "env", short: "e", type: "string" as const, multiple: true, description: "" },
    { name: "shape", type: "string" as const, description: "" },
    { name: "status", type: "string" as const, choices: ["running", "paused"], description: "" },
  ];

  it("parses flags after positionals, aliases, repeatable values and --", () => {
    const p = parseCommandArgs(
      ["a", "--env", "A=1", "b", "-e", "B=2", "--yes", "--", "x", "--force"],
      specs,
      "t",
    );
    assert.deepEqual(p.positionals, ["a", "b"]);
    assert.deepEqual(p.flags.env, ["A=1", "B=2"]);
    assert.equal(p.flags.force, true);
    assert.deepEqual(p.rest, ["x", "--force"]);
  });

  it("treats a lone - as a positional (stdin/stdout)", () => {
    assert.deepEqual(parseCommandArgs(["box", "-", "/tmp/x"], specs, "t").positionals, [
      "box",
      "-",
      "/tmp/x",
    ]);
  });

  it("rejects unknown flags, missing values, bad choices and duplicates", () => {
    assert.throws(() => parseCommandArgs(["--nope"], specs, "t"), /unknown flag --nope/);
    assert.throws(() => parseCommandArgs(["--shape"], specs, "t"), /needs a value/);
    assert.throws(() => parseCommandArgs(["--status", "gone"], specs, "t"), /invalid value "gone"/);
    assert.throws(() => parseCommandArgs(["--shape", "a", "--shape", "b"], specs, "t"), /more than once/);
    assert.throws(() => parseCommandArgs(["--force=maybe"], specs, "t"), /takes no value/);
  });

  it("a string flag takes the next token even if it starts with -", () => {
    assert.equal(parseCommandArgs(["--shape", "-x"], specs, "t").flags.shape, "-x");
  });
});
