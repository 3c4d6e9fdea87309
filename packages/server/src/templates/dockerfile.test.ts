import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DockerfileError, parseDockerfile, planDockerfile } from "./dockerfile.js";

const B = "FROM nodeops/sandbox:debian\n";
const rejects = (df: string, re: RegExp) =>
  assert.throws(
    () => planDockerfile(df),
    (e) => e instanceof DockerfileError && re.test(e.message),
  );

describe("dockerfile rules", () => {
  test("no FROM", () => rejects("RUN true\n", /exactly one FROM \(found 0\)/));
  test("two FROMs (multi-stage)", () =>
    rejects(`${B}FROM nodeops/sandbox:debian AS b\n`, /exactly one FROM \(found 2\)/));
  test("base not on the allowlist names the allowed ones", () =>
    rejects("FROM debian:12\n", /debian:12 is not allowed; allowed bases: nodeops\/sandbox:debian/));
  test("digest suffix is a different string", () =>
    rejects("FROM nodeops/sandbox:debian@sha256:ab\n", /not allowed/));
  test("ARG-substituted FROM", () =>
    rejects("ARG BASE=nodeops/sandbox:debian\nFROM ${BASE}\n", /ARG substitution/));
  test("COPY", () => rejects(`${B}COPY a /a\n`, /line 2: COPY is not allowed/));
  test("ADD", () => rejects(`${B}add https://x /a\n`, /ADD is not allowed/));
  test("over 64 KiB", () => rejects(`${B}RUN true # ${"x".repeat(64 * 1024)}\n`, /exceeds 65536 bytes/));
  test("instruction before FROM", () => rejects(`RUN true\n${B}`, /FROM must be the first/));
  test("unknown instruction", () => rejects(`${B}FROB x\n`, /line 2: unknown instruction FROB/));
  test("unclosed heredoc", () => rejects(`${B}RUN <<EOF\necho hi\n`, /heredoc EOF is not closed/));
  test("RUN flags", () => rejects(`${B}RUN --mount=type=cache,target=/x true\n`, /RUN flags/));
  test("SHELL must be JSON", () => rejects(`${B}SHELL bash -c\n`, /SHELL must be a JSON array/));
  test("escape directive with a bad value", () => rejects(`# escape=x\n${B}`, /escape must be/));
  test("FROM ... AS name is one stage", () =>
    assert.equal(planDockerfile(`${B.trim()} AS x\n`).base, "nodeops/sandbox:debian"));
});

describe("dockerfile grammar", () => {
  test("line continuations join, comments inside are dropped", () => {
    const p = planDockerfile(`${B}RUN apt-get update \\\n# a comment\n  && apt-get install -y ripgrep\n`);
    assert.deepEqual(p.steps[0]!.argv, ["/bin/sh", "-c", "apt-get update   && apt-get install -y ripgrep"]);
  });
  test("escape directive switches the continuation character", () => {
    const ins = parseDockerfile("# escape=`\nFROM nodeops/sandbox:debian\nRUN echo a `\n  b\nRUN echo c\\\n");
    assert.deepEqual(
      ins.map((i) => i.args),
      ["nodeops/sandbox:debian", "echo a   b", "echo c\\"],
    );
  });
  test("syntax directive is accepted; a directive after an instruction is a comment", () => {
    const ins = parseDockerfile(
      "# syntax=docker/dockerfile:1\nFROM nodeops/sandbox:debian\n# escape=`\nRUN a \\\n b\n",
    );
    assert.equal(ins[1]!.args, "a  b");
  });
  test("exec form runs argv without a shell", () => {
    assert.deepEqual(planDockerfile(`${B}RUN ["echo", "a b"]\n`).steps[0]!.argv, ["echo", "a b"]);
  });
  test("heredoc alone is the script; <<- strips tabs", () => {
    const p = planDockerfile(`${B}RUN <<-EOF\n\techo one\n\techo two\n\tEOF\nRUN true\n`);
    assert.deepEqual(p.steps[0]!.argv, ["/bin/sh", "-c", "echo one\necho two\n"]);
    assert.equal(p.steps.length, 2);
  });
  test("heredoc as a command's stdin", () => {
    const p = planDockerfile(`${B}RUN cat <<'EOF' > /etc/x\n$HOME\nEOF\n`);
    assert.equal(p.steps[0]!.argv[2], "cat <<'EOF' > /etc/x\n$HOME\nEOF\n");
  });
  test("ENV (both forms), ARG, WORKDIR (relative, expanded), USER, SHELL apply to later RUNs", () => {
    const p = planDockerfile(
      `${B}ARG V=1\nENV A=x B="y z"\nENV C $A-c\nWORKDIR /srv\nWORKDIR app\nRUN one\nUSER nobody\nSHELL ["/bin/bash", "-lc"]\nRUN two\nLABEL a=b\nEXPOSE 80\nCMD ["sleep", "1"]\n`,
    );
    const [one, two] = p.steps;
    assert.deepEqual(one!.env, { V: "1", A: "x", B: "y z", C: "x-c" });
    assert.equal(one!.cwd, "/srv/app");
    assert.equal(one!.user, "root");
    assert.deepEqual(two!.argv, ["/bin/bash", "-lc", "two"]);
    assert.equal(two!.user, "nobody");
    assert.deepEqual(p.env, { A: "x", B: "y z", C: "x-c" }, "ARG is a build-time value only");
    assert.equal(p.cwd, "/srv/app");
    assert.deepEqual(p.cmd, ["sleep", "1"]);
  });
  test("a variable named like an Object method is unset, as in Docker, not the method's source", () => {
    const p = planDockerfile(
      `${B}ENV A=$constructor B=\${toString:-dflt} C=\${__proto__}x\nWORKDIR /w$hasOwnProperty\n`,
    );
    assert.deepEqual(p.env, { A: "", B: "dflt", C: "x" });
    assert.equal(p.cwd, "/w");
  });
  test("CRLF line endings and a BOM", () => {
    assert.equal(planDockerfile(`\uFEFF${B.trim()}\r\nRUN true\r\n`).steps[0]!.argv[2], "true");
  });
});
