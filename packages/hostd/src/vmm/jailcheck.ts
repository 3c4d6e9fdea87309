/**
 * `doctor`'s view of the VMM jail (jail.ts): real probes, not guesses from paths — the jailer is built and
 * jails a `qemu --version` (mount and pid namespaces, pivot_root, uid drop), and a QEMU starts under the
 * seccomp filter VMs get and quits over QMP.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_SLOT } from "../net/plan.js";
import { runRaw } from "../sys/index.js";
import { SANDBOX } from "./devices/sandbox.js";
import { ensureJailer, jailArgv, jailIds } from "./jail.js";

interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

const QEMU = "qemu-system-x86_64";

async function jailerCheck(cacheDir: string): Promise<Check> {
  const check = "vmm jail";
  let range: string;
  try {
    range = `uids/gids ${jailIds(1).uid}–${jailIds(MAX_SLOT).uid} (CREATEOS_SANDBOX_JAIL_UID_BASE + slot)`;
  } catch (e) {
    return { check, ok: false, detail: (e as Error).message };
  }
  let jailer: string;
  try {
    jailer = await ensureJailer(cacheDir);
  } catch (e) {
    return { check, ok: false, detail: `cannot build the jailer (needs go): ${(e as Error).message}` };
  }
  const dir = await mkdtemp(join(tmpdir(), "csb-jailcheck-"));
  try {
    const ids = jailIds(MAX_SLOT);
    const argv = jailArgv(
      jailer,
      { ...ids, pidfile: join(dir, "pid") },
      { ro: [], rw: [dir], dev: [] },
      QEMU,
      ["--version"],
    );
    const r = await runRaw(jailer, argv, { timeoutMs: 10_000 });
    // The jailer exits once QEMU is forked off; QEMU's own output says it ran inside.
    if (r.code !== 0 || !r.stdout.includes("QEMU emulator version"))
      return {
        check,
        ok: false,
        detail: `a jailed QEMU does not start: ${r.stderr.trim() || `exit ${r.code}`}`,
      };
    return {
      check,
      ok: true,
      detail: `each QEMU gets its own ${range}, mount + pid namespaces, pivot_root, no capabilities, no_new_privs`,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function seccompCheck(): Promise<Check> {
  const check = "vmm seccomp";
  const r = await runRaw(
    QEMU,
    ["-sandbox", SANDBOX, "-M", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"],
    { input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n', timeoutMs: 10_000 },
  );
  return r.code === 0
    ? { check, ok: true, detail: `QEMU runs under -sandbox ${SANDBOX}` }
    : { check, ok: false, detail: `QEMU refuses its seccomp filter: ${r.stderr.trim() || `exit ${r.code}`}` };
}

export async function jailChecks(cacheDir: string): Promise<Check[]> {
  return [await jailerCheck(cacheDir), await seccompCheck()];
}
