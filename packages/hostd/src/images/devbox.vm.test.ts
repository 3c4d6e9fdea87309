/**
 * devbox:1 as its users expect it, on a real sandbox through the host daemon: Node 24 is the `node` of
 * every PATH, npm/npx/corepack, Bun and the coding-agent CLIs answer, pip installs for root without flags,
 * venvs work, native code builds against Python's headers, an npm install from the registry works, and
 * sshd answers on port 22 once the on-demand prep (what `createos sandbox shell --ssh` runs) started it.
 *
 *   flock /tmp/csb-vmtest.lock node --test packages/hostd/dist/images/devbox.vm.test.js
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { LocalHostDaemon } from "../daemon.js";
import { drain, openOpts, run, sh, spec, tempDataDir } from "../testutil.js";

const IMAGE = "devbox:1";
const dataDir = tempDataDir("devbox");
let d: LocalHostDaemon;
let id = "";

before(async () => {
  d = await LocalHostDaemon.open(openOpts(dataDir));
  const t0 = Date.now();
  await d.ensureImage(IMAGE);
  process.stderr.write(`${IMAGE} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  const s = spec({ image: IMAGE, mem_mib: 1024 });
  await d.create(s);
  id = s.sandbox_id;
});

after(async () => {
  // a closed daemon leaves its VMs running (they outlive daemon restarts): destroy them first
  if (d) for (const v of await d.list()) await d.destroy(v.sandbox_id);
  await d?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test("node is v24 on the exec PATH, in login and non-login shells; no Debian node underneath", async () => {
  const direct = await run(d, id, ["node", "--version"]);
  assert.equal(direct.code, 0, direct.stderr);
  assert.match(direct.stdout, /^v24\.\d+\.\d+\n$/);
  for (const argv of [
    ["sh", "-c", "node --version"],
    ["bash", "-c", "node --version"],
    ["bash", "-lc", "node --version"],
    ["bash", "-ic", "node --version"],
  ]) {
    const r = await run(d, id, argv);
    assert.equal(r.stdout.trim().split("\n").at(-1), direct.stdout.trim(), `${argv.join(" ")}: ${r.stderr}`);
  }
  assert.equal((await sh(d, id, "command -v node")).trim(), "/usr/local/bin/node");
  assert.equal((await run(d, id, ["test", "-e", "/usr/bin/node"])).code, 1, "no Debian nodejs");
});

test("npm, npx, corepack, bun, bunx and the coding-agent CLIs answer --version", async () => {
  const expect: [string, RegExp][] = [
    ["npm", /^11\.\d+\.\d+$/m],
    ["npx", /^11\.\d+\.\d+$/m],
    ["corepack", /^0\.\d+\.\d+$/m],
    ["bun", /^1\.\d+\.\d+$/m],
    ["bunx", /^1\.\d+\.\d+$/m],
    ["claude", /^2\.\d+\.\d+ \(Claude Code\)$/m],
    ["codex", /^codex-cli 0\.\d+\.\d+$/m],
    ["gemini", /^0\.\d+\.\d+$/m],
    ["opencode", /^1\.\d+\.\d+$/m],
  ];
  const versions: string[] = [];
  for (const [cmd, re] of expect) {
    const r = await run(d, id, [cmd, "--version"]);
    assert.equal(r.code, 0, `${cmd} --version exited ${r.code}: ${r.stderr}`);
    assert.match(r.stdout, re, `${cmd} --version: ${r.stdout}${r.stderr}`);
    versions.push(`${cmd} ${r.stdout.trim()}`);
  }
  const debian = await sh(
    d,
    id,
    "python3 --version; pip --version | cut -d' ' -f1-2; git --version; gcc --version | head -1; rg --version | head -1; jq --version; tmux -V; ssh -V 2>&1; s3fs --version | head -1",
  );
  process.stderr.write(`devbox:1 tools:\n  ${[...versions, ...debian.trim().split("\n")].join("\n  ")}\n`);
});

/** A pure-Python wheel, written by Python's zipfile in the guest (no build backend, no index needed). */
const MAKE_WHEEL = `
import base64, hashlib, zipfile
files = {
  "csbhello/__init__.py": "VALUE = 6 * 7\\n",
  "csbhello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: csbhello\\nVersion: 1.0\\n",
  "csbhello-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: csb-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
def h(b): return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode()
record = "".join(f"{p},{h(c.encode())},{len(c.encode())}\\n" for p, c in files.items()) + "csbhello-1.0.dist-info/RECORD,,\\n"
with zipfile.ZipFile("/tmp/whl/csbhello-1.0-py3-none-any.whl", "w") as z:
  for p, c in {**files, "csbhello-1.0.dist-info/RECORD": record}.items(): z.writestr(p, c)
`;

test("pip install of a local wheel works for root without flags; python3 -m venv works", async () => {
  await sh(d, id, "mkdir -p /tmp/whl");
  const mk = await run(d, id, ["python3", "-c", MAKE_WHEEL]);
  assert.equal(mk.code, 0, mk.stderr);
  const pip = await run(d, id, [
    "sh",
    "-c",
    "cd /tmp/whl && pip install ./csbhello-1.0-py3-none-any.whl 2>&1",
  ]);
  assert.equal(pip.code, 0, pip.stdout);
  assert.doesNotMatch(pip.stdout, /externally-managed|WARNING: Running pip as the 'root' user/, pip.stdout);
  assert.match(pip.stdout, /Successfully installed csbhello-1\.0/);
  for (const py of ["python3", "python"]) {
    assert.equal((await sh(d, id, `cd / && ${py} -c 'import csbhello; print(csbhello.VALUE)'`)).trim(), "42");
  }
  const venv = await run(d, id, [
    "sh",
    "-c",
    "python3 -m venv /tmp/venv && /tmp/venv/bin/pip install /tmp/whl/csbhello-1.0-py3-none-any.whl 2>&1 && cd / && /tmp/venv/bin/python -c 'import sys, csbhello; print(sys.prefix, csbhello.VALUE)'",
  ]);
  assert.equal(venv.code, 0, venv.stdout + venv.stderr);
  assert.match(venv.stdout, /^\/tmp\/venv 42$/m);
});

test("a C extension builds against Python's headers and imports", async () => {
  const c =
    '#include <Python.h>\\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "csbext", NULL, -1, NULL};\\nPyMODINIT_FUNC PyInit_csbext(void) { PyObject *o = PyModule_Create(&m); PyModule_AddIntConstant(o, "V", 42); return o; }\\n';
  const out = await sh(
    d,
    id,
    `mkdir -p /tmp/ext && cd /tmp/ext && printf '${c}' > csbext.c && gcc -shared -fPIC $(python3-config --includes) -o csbext$(python3-config --extension-suffix) csbext.c && python3 -c 'import csbext; print(csbext.V)'`,
  );
  assert.equal(out.trim(), "42");
});

test("npm install of a small registry package (guest DNS, egress through the host's TLS proxy)", async () => {
  const out = await sh(
    d,
    id,
    'cd "$(mktemp -d)" && npm install --no-audit --no-fund --loglevel=error is-number 2>&1 && node -e \'console.log(require("is-number")(5))\'',
  );
  assert.match(out, /^true$/m, out);
  // A plain exec (no login shell, no /etc/profile.d) of Node's own HTTPS client trusts the system bundle
  // too: the agent names it in every exec's environment.
  const fetched = await run(d, id, [
    "node",
    "-e",
    'fetch("https://registry.npmjs.org/is-number").then((r) => { console.log(r.status); process.exit(r.ok ? 0 : 1); })',
  ]);
  assert.equal(fetched.code, 0, fetched.stdout + fetched.stderr);
  // corepack fetches pnpm from the registry itself (Node's fetch: the CA comes from /etc/profile.d). The
  // version it pins, not "latest": resolving latest checks registry signatures this host's mirror omits.
  const pnpm = await run(d, id, [
    "bash",
    "-lc",
    "cd /tmp && COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_DEFAULT_TO_LATEST=0 pnpm --version",
  ]);
  assert.equal(pnpm.code, 0, pnpm.stdout + pnpm.stderr);
  assert.match(pnpm.stdout, /^\d+\.\d+\.\d+$/m);
});

test("sshd: nothing on port 22 until the on-demand prep, then it answers with its banner", async () => {
  assert.equal(
    (await run(d, id, ["test", "-e", "/etc/ssh/ssh_host_ed25519_key"])).code,
    1,
    "no baked host key",
  );
  const banner = async (): Promise<string> => {
    try {
      const s = await d.connectTcp(id, 22);
      s.end();
      return (await drain(s)).toString();
    } catch (e) {
      return `error: ${(e as Error).message}`;
    }
  };
  assert.doesNotMatch(await banner(), /^SSH-2\.0-/, "sshd is not started at boot");
  // the steps of the CLI's sshPrepScript (packages/cli/src/commands/sandbox/shell.ts)
  await sh(
    d,
    id,
    "[ -x /usr/sbin/sshd ] && mkdir -p /run/sshd && chmod 755 /run/sshd && (ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null) && /usr/sbin/sshd",
  );
  assert.match(await banner(), /^SSH-2\.0-OpenSSH_9\.2p1 Debian/);
  assert.match(await banner(), /^SSH-2\.0-OpenSSH/, "and keeps answering");
});
