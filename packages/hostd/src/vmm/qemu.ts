/**
 * QEMU `microvm` driver. Guest RAM is a `memory-backend-file,share=on` file so a snapshot never copies
 * RAM through the migration stream: with the `x-ignore-shared` capability the stream carries only device
 * and vCPU state (~50 KB), and the RAM file itself is the memory image.
 *
 * QEMU runs detached in a session of its own (inside the sandbox's network namespace when given), under
 * its seccomp filter: VMs outlive the host daemon and the next one re-adopts them through the pidfile and
 * QMP socket. The snapshot's device state travels over a Unix socket (migration.ts), never through a shell.
 */
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { type Accel, HostdError } from "@createos-sandbox/protocol";
import { pidAlive, procCmdline, procGone, signal, spawnDetached } from "../sys/index.js";
import { readTail } from "../sys/nofollow.js";
import { ROOT_DRIVE, blockArgs } from "./devices/block.js";
import { consoleArgs } from "./devices/console.js";
import { controlArgs } from "./devices/control.js";
import { cpuArgs } from "./devices/cpu.js";
import { bootArgs, machineArgs } from "./devices/machine.js";
import { memoryArgs } from "./devices/memory.js";
import { netArgs } from "./devices/net.js";
import { rngArgs } from "./devices/rng.js";
import { sandboxArgs } from "./devices/sandbox.js";
import { agentChannelArgs } from "./devices/serial.js";
import type {
  Machine,
  MachineConfig,
  MachinePaths,
  MachineState,
  RestoreOptions,
  VmmDriver,
} from "./driver.js";
import { backingChain, clearPidfile, ensureJailer, jailArgv, ownVmFiles } from "./jail.js";
import { receiveState, sendState } from "./migration.js";
import { probeAccel } from "./probe.js";
import { QmpClient } from "./qmp.js";

export const QEMU_BIN = "qemu-system-x86_64";

export { MICROVM } from "./devices/machine.js";

/**
 * Where QEMU's sockets are: `run/`, the one name in the VM dir the jailed QEMU may create entries in (its
 * uid owns it; the VM dir itself stays root's, so QEMU can neither replace vm.json nor plant a name the
 * daemon would later act on). A VM started before that layout has its sockets in the VM dir itself.
 */
export function socketDir(dir: string): string {
  const run = join(dir, "run");
  return !existsSync(run) && existsSync(join(dir, "qmp.sock")) ? dir : run;
}

export function machinePaths(dir: string): MachinePaths {
  const run = socketDir(dir);
  return {
    qmp: join(run, "qmp.sock"),
    agent: join(run, "agent.sock"),
    console: join(dir, "console.log"),
    pidfile: join(dir, "qemu.pid"),
  };
}

/** The socket a snapshot's device state crosses (migration.ts). */
function migrationSocket(dir: string): string {
  return join(socketDir(dir), "mig.sock");
}

/**
 * The QEMU argument vector for a machine, one device group at a time (vmm/devices/). The order is part
 * of the contract: microvm assigns virtio-mmio slots in command-line order, and a snapshot restores only
 * into the very same devices in the same slots. Restore adds `-incoming defer` to the very same devices.
 */
export function qemuArgs(c: MachineConfig, p: MachinePaths, opts: { incoming: boolean }): string[] {
  return [
    ...machineArgs(c),
    ...cpuArgs(c),
    ...memoryArgs(c),
    ...bootArgs(c),
    ...blockArgs(c),
    ...agentChannelArgs(p),
    ...rngArgs(),
    ...consoleArgs(p),
    ...controlArgs(p),
    ...sandboxArgs(),
    ...netArgs(c),
    // paused, waiting for `migrate-incoming` with the snapshot's device state
    ...(opts.incoming ? ["-S", "-incoming", "defer"] : []),
  ];
}

class QemuMachine implements Machine {
  state: MachineState = "configured";
  pid: number | undefined;
  readonly paths: MachinePaths;
  private qmp: QmpClient | undefined;
  private resolveExited!: (reason: string) => void;
  readonly exited: Promise<string>;
  private watching = false;

  constructor(readonly config: MachineConfig) {
    this.paths = machinePaths(config.dir);
    this.exited = new Promise((r) => {
      this.resolveExited = r;
    });
  }

  private need(...states: MachineState[]): void {
    if (!states.includes(this.state)) {
      throw new HostdError("conflict", `VM is ${this.state}; this action needs it ${states.join(" or ")}`);
    }
  }

  private get q(): QmpClient {
    if (!this.qmp || this.qmp.closed) throw new HostdError("conflict", "the VM's QEMU is not running");
    return this.qmp;
  }

  private async launch(incoming: boolean): Promise<void> {
    const c = this.config;
    await mkdir(c.dir, { recursive: true });
    await rm(this.paths.qmp, { force: true });
    await rm(this.paths.agent, { force: true });
    await clearPidfile(this.paths.pidfile);
    const jailer = await ensureJailer(c.jail.cacheDir);
    // A private RAM layer is shared by the forks of one parent: never given to one VM's uid (layers.ts).
    const ram = c.ramShared === false ? undefined : c.ramPath;
    await ownVmFiles(c.dir, { ram, others: [c.diskPath], create: [this.paths.console] }, c.jail);
    const mounts = {
      cg: c.jail.cgroups,
      netns: c.netns ? `/run/netns/${c.netns}` : undefined,
      ro: [c.kernel, ...(await backingChain(c.diskPath, c.jail.diskRoots))],
      rw: [c.dir, ...(c.ramShared === false ? [c.ramPath] : [])],
      dev: [
        "/dev/null",
        "/dev/urandom",
        ...(c.tap ? ["/dev/net/tun"] : []),
        ...(c.accel === "kvm" ? ["/dev/kvm"] : []),
      ],
    };
    const argv = jailArgv(
      jailer,
      { ...c.jail, pidfile: this.paths.pidfile },
      mounts,
      QEMU_BIN,
      qemuArgs(c, this.paths, { incoming }),
    );
    const logPath = join(c.dir, "qemu.log");
    const launcher = await spawnDetached(jailer, argv, { logPath });
    // The jailer exits once the jailed QEMU is forked off (pid 1 of its own pid namespace); the pid the
    // host sees is in the pidfile it wrote.
    const { code, signal: sig } = await launcher.exited;
    // Both files are in the VM dir, which is QEMU's: read without following a link, and bounded.
    const why = async () => (await readTail(logPath, 2000).catch((e) => String(e))).trim() || "no output";
    if (code !== 0)
      throw new HostdError("internal", `QEMU's jail failed (${sig ?? `exit ${code}`}): ${await why()}`);
    const pid = Number((await readTail(this.paths.pidfile, 64)).trim());
    if (!Number.isInteger(pid) || pid <= 0)
      throw new HostdError("internal", `bad QEMU pidfile ${this.paths.pidfile}`);
    this.pid = pid;
    // QEMU is up once its QMP socket answers; if it exits first, its stderr (in the log) says why.
    let up = false;
    const gone = (async () => {
      while (!up && !procGone(pid)) await new Promise((r) => setTimeout(r, 20));
      if (!up) throw new HostdError("internal", `QEMU exited at start: ${await why()}`);
    })();
    gone.catch(() => undefined);
    try {
      const qmp = await Promise.race([QmpClient.connect(this.paths.qmp, 30_000), gone]);
      if (!qmp) throw new HostdError("internal", "QEMU's QMP socket did not answer");
      await this.attach(qmp);
    } finally {
      up = true;
    }
  }

  async attach(qmp: QmpClient): Promise<void> {
    this.qmp = qmp;
    // Device state only; RAM stays in the shared file. Set once so pause needs no extra round trip. Also
    // for a private RAM mapping (a fork): QEMU checks that a stream's capabilities match the restoring
    // side's, and the parent's stream was saved with it on (its RAM block private, its pages not sent).
    await ignoreShared(qmp, true);
    this.watch();
  }

  private watch(): void {
    if (this.watching || !this.qmp) return;
    this.watching = true;
    const qmp = this.qmp;
    let reason = "QEMU exited";
    qmp.on("event", (e: { event: string; data?: Record<string, unknown> }) => {
      if (e.event === "SHUTDOWN") reason = `guest shut down (${String(e.data?.reason ?? "unknown")})`;
    });
    qmp.once("close", () => {
      void (async () => {
        // The QMP socket closes a moment before the process is reaped.
        for (let i = 0; i < 200 && this.pid !== undefined && !procGone(this.pid); i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
        if (this.pid !== undefined && !procGone(this.pid)) signal(this.pid, "SIGKILL");
        this.state = "stopped";
        this.resolveExited(reason);
      })();
    });
  }

  /** Drop the QMP connection and leave QEMU running (the next daemon re-adopts it). */
  detach(): void {
    this.watching = true;
    this.qmp?.removeAllListeners("close");
    this.qmp?.close();
  }

  async start(): Promise<void> {
    this.need("configured");
    this.state = "running";
    try {
      await this.launch(false);
    } catch (e) {
      await this.stop(0);
      throw e;
    }
  }

  async restore(statePath: string, opts: RestoreOptions = {}): Promise<void> {
    this.need("configured");
    this.state = "paused";
    try {
      await this.launch(true);
      const q = this.q;
      // A stream that carries the RAM loads it into the (shared) RAM file: the capability must be off
      // for that, and back on afterwards so this VM's own pauses save device state only.
      if (opts.ramInState) await ignoreShared(q, false);
      const done = this.migrationDone(q, 60_000);
      const sock = migrationSocket(this.config.dir);
      await q.execute("migrate-incoming", { uri: `unix:${sock}` });
      await sendState(sock, statePath, 10_000);
      await done;
      await rm(sock, { force: true });
      if (opts.ramInState) await ignoreShared(q, true);
    } catch (e) {
      await this.stop(0);
      throw e;
    }
  }

  /** Waits for the MIGRATION event (or a query-migrate poll, in case the event raced) to settle. */
  private async migrationDone(q: QmpClient, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let settled: string | undefined;
    const onEv = (e: { event: string; data?: Record<string, unknown> }) => {
      if (e.event !== "MIGRATION") return;
      const s = String(e.data?.status);
      if (s === "completed" || s === "failed" || s === "cancelled") settled = s;
    };
    q.on("event", onEv);
    try {
      let polls = 0;
      while (settled === undefined) {
        if (q.closed) throw new HostdError("internal", "QEMU exited during migration");
        if (Date.now() > deadline) throw new HostdError("internal", "snapshot state transfer timed out");
        await new Promise((r) => setTimeout(r, 2));
        if (++polls % 10 === 0) {
          const info = await q.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
          if (info.status === "completed" || info.status === "failed" || info.status === "cancelled")
            settled = info.status;
          if (info.status === "failed")
            throw new HostdError("internal", `migration failed: ${info["error-desc"]}`);
        }
      }
      if (settled !== "completed") {
        const info = await q.execute<{ "error-desc"?: string }>("query-migrate").catch(() => ({}));
        throw new HostdError(
          "internal",
          `VM state transfer ${settled}: ${(info as { "error-desc"?: string })["error-desc"] ?? "see console.log"}`,
        );
      }
    } finally {
      q.off("event", onEv);
    }
  }

  async resume(): Promise<void> {
    this.need("paused");
    await this.q.execute("cont");
    this.state = "running";
  }

  async pause(): Promise<void> {
    this.need("running");
    await this.q.execute("stop");
    this.state = "paused";
  }

  async snapshot(statePath: string): Promise<void> {
    this.need("paused");
    const q = this.q;
    // A private RAM mapping is not in a file of this VM's: its pages go into the stream, saved with the
    // capability off so that the restoring side, whose RAM is a shared file again, loads them into it.
    if (this.config.ramShared === false) await ignoreShared(q, false);
    const rx = await receiveState(migrationSocket(this.config.dir), statePath, this.config.jail);
    try {
      const done = this.migrationDone(q, 60_000);
      await q.execute("migrate", { uri: `unix:${migrationSocket(this.config.dir)}` });
      await done;
      await rx.written;
    } finally {
      await rx.close();
    }
  }

  async resizeDisk(bytes: number): Promise<void> {
    this.need("running", "paused");
    await this.q.execute("block_resize", { device: ROOT_DRIVE, size: bytes });
  }

  async stop(graceMs = 2000): Promise<void> {
    if (this.state === "stopped" && (this.pid === undefined || procGone(this.pid))) return;
    const pid = this.pid;
    if (this.qmp && !this.qmp.closed && graceMs > 0) {
      await Promise.race([
        this.qmp.execute("quit").catch(() => undefined),
        new Promise((r) => setTimeout(r, graceMs)),
      ]);
      await Promise.race([this.qmp.whenClosed(), new Promise((r) => setTimeout(r, graceMs))]);
    }
    if (pid !== undefined) {
      const deadline = Date.now() + Math.max(graceMs, 200);
      while (!procGone(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      if (!procGone(pid)) {
        signal(pid, "SIGKILL");
        for (let i = 0; i < 500 && !procGone(pid); i++) await new Promise((r) => setTimeout(r, 5));
      }
    }
    this.qmp?.close();
    this.state = "stopped";
    if (!this.watching) this.resolveExited("stopped");
  }
}

/** `x-ignore-shared` (RAM of shared RAM blocks stays out of the stream) on or off; events always on. */
async function ignoreShared(qmp: QmpClient, on: boolean): Promise<void> {
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [
      { capability: "x-ignore-shared", state: on },
      { capability: "events", state: true },
    ],
  });
  // A stream that carries RAM crosses a local socket from a stopped guest: QEMU's default bandwidth cap
  // (128 MiB/s, meant for live migration over a network) would be most of the pause.
  if (!on) await qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 ** 3 });
}

/** True when `pid` is a QEMU of ours serving the VM in `dir`. */
export function isOurQemu(pid: number, dir: string): boolean {
  if (!pidAlive(pid) || procGone(pid)) return false;
  const argv = procCmdline(pid);
  if (!argv) return false;
  const qmp = [join(dir, "run", "qmp.sock"), join(dir, "qmp.sock")];
  return (argv[0] ?? "").includes("qemu-system") && argv.some((a) => qmp.some((q) => a.includes(q)));
}

export class QemuDriver implements VmmDriver {
  readonly name = "qemu";

  configure(config: MachineConfig): Machine {
    return new QemuMachine(config);
  }

  async adopt(config: MachineConfig, pid: number, launchDir = config.dir): Promise<Machine | undefined> {
    if (!isOurQemu(pid, launchDir)) return undefined;
    const m = new QemuMachine(config);
    m.pid = pid;
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(m.paths.qmp, 3000);
    } catch {
      return undefined;
    }
    await m.attach(qmp);
    const st = await qmp.execute<{ status: string; running: boolean }>("query-status");
    m.state = st.running ? "running" : "paused";
    return m;
  }

  /** A real boot under KVM decides (vmm/probe.ts). */
  probeAccel(kernel: string): Promise<Accel> {
    return probeAccel(QEMU_BIN, kernel);
  }
}

/** The one durable atomic JSON write (sys/fs.ts), re-exported for the importers of this module. */
export { writeJsonAtomic } from "../sys/fs.js";
