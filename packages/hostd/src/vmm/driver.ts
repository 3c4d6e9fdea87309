/**
 * The VMM driver interface, shaped like Firecracker's action set so a Firecracker driver can stand in
 * for QEMU on KVM hosts. A machine goes through:
 *
 *   configured ──start()──► running ◄──resume()── paused ◄──restore(state)── configured
 *                              │ pause()            ▲ │ snapshot(state)
 *                              └────────────────────┘ └──► paused (state saved; resume() or stop())
 *   any state ──stop()──► stopped
 *
 * Each action rejects with `conflict` outside the states listed on it.
 */
import type { Accel } from "@createos-sandbox/protocol";
import type { JailConfig } from "./jail.js";

export interface MachineConfig {
  /** Directory holding the VM's sockets, pidfile and console log. */
  dir: string;
  vcpu: number;
  memMib: number;
  kernel: string;
  cmdline: string;
  /** Guest RAM file (shared mapping: it *is* the guest's memory, and the snapshot of it). */
  ramPath: string;
  /**
   * false: `ramPath` is a frozen RAM layer (a fork's parent) mapped privately, copy-on-write; it is never
   * written, and the migration stream carries the RAM. Default true.
   */
  ramShared?: boolean;
  /** Top qcow2 layer of the root disk (writable). */
  diskPath: string;
  /** Network namespace to run the VMM in; its TAP is `tap`. */
  netns?: string;
  tap?: string;
  mac: string;
  accel: Accel;
  /** `-M` value without the memory backend (default: the tuned microvm line in qemu.ts). */
  machine?: string;
  /** Translation-block cache size, MiB (TCG only). */
  tbSizeMib?: number;
  /** The VMM's own uid/gid and where its jailer is built (vmm/jail.ts). */
  jail: JailConfig;
}

export interface RestoreOptions {
  /** The stream carries the RAM (it was saved from a private mapping): it is loaded into the RAM file. */
  ramInState?: boolean;
}

export type MachineState = "configured" | "running" | "paused" | "stopped";

export interface MachinePaths {
  qmp: string;
  agent: string;
  console: string;
  pidfile: string;
}

export interface Machine {
  readonly config: MachineConfig;
  readonly paths: MachinePaths;
  readonly state: MachineState;
  /** VMM process id once started/restored/adopted. */
  readonly pid: number | undefined;
  /** configured → running: cold boot. */
  start(): Promise<void>;
  /** configured → paused: a new VMM whose devices and vCPUs come from `statePath` (RAM is the RAM file). */
  restore(statePath: string, opts?: RestoreOptions): Promise<void>;
  /** paused → running. */
  resume(): Promise<void>;
  /** running → paused: vCPUs stopped, devices quiet. */
  pause(): Promise<void>;
  /** paused → paused: device state written to `statePath` and the disk flushed; RAM stays in the RAM file. */
  snapshot(statePath: string): Promise<void>;
  /** any → stopped: graceful quit, then SIGKILL after `graceMs`. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** Grow the root disk's virtual size (guest sees a capacity change). running/paused. */
  resizeDisk(bytes: number): Promise<void>;
  /** Drop the control connection, leaving the VMM running (host daemon shutdown). */
  detach(): void;
  /** Resolves when the VMM process has exited, for any reason. */
  readonly exited: Promise<string>;
}

export interface VmmDriver {
  readonly name: string;
  /** The accelerator this host can use, decided by a real boot probe. */
  probeAccel(kernel: string): Promise<Accel>;
  /** New machine (no process yet). */
  configure(config: MachineConfig): Machine;
  /** Reconnect to a VMM left running by an earlier host daemon; undefined when it is gone or not ours. */
  adopt(config: MachineConfig, pid: number, launchDir?: string): Promise<Machine | undefined>;
}
