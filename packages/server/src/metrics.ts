/** Prometheus metrics through prom-client: our request, VM-operation and sandbox series plus process defaults. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const VM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];

export class Metrics {
  readonly registry = new Registry();
  /**
   * Requests not counted yet, as (route, method, status, seconds): prom-client's `labels(…)` calls cost
   * several times more run once between two requests than in a loop over many (like log lines, log.ts),
   * so requests are counted at scrape time (the series' `collect`) or every 256.
   */
  private readonly pending: (string | number)[] = [];
  private readonly httpRequests = new Counter({
    name: "createos_http_requests_total",
    help: "HTTP requests by route, method and status.",
    labelNames: ["route", "method", "status"],
    registers: [this.registry],
    collect: () => this.countRequests(),
  });
  private readonly httpLatency = new Histogram({
    name: "createos_http_request_duration_seconds",
    help: "HTTP request latency by route.",
    labelNames: ["route", "method"],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
    collect: () => this.countRequests(),
  });
  private readonly vmOps = this.histogram(
    "createos_vm_operation_duration_seconds",
    "Host daemon operations by kind and result.",
    ["op", "result"],
    VM_BUCKETS,
  );
  private readonly vmOpErrors = new Counter({
    name: "createos_vm_operation_errors_total",
    help: "Failed host daemon operations.",
    labelNames: ["op"],
    registers: [this.registry],
  });
  /**
   * Guest traffic the hosts counted (netpolicy.ts folds it in), per sandbox: bytes by direction, allowlist
   * refusals. A destroyed sandbox's series are removed, so there are as many as live sandboxes with traffic.
   */
  private readonly guestBytes = new Counter({
    name: "createos_sandbox_network_bytes_total",
    help: "Bytes a guest exchanged with the outside world, by direction (egress is what quotas meter).",
    labelNames: ["sandbox_id", "direction"],
    registers: [this.registry],
  });
  private readonly guestDenied = new Counter({
    name: "createos_sandbox_egress_denied_packets_total",
    help: "Guest packets the sandbox's egress allowlist refused.",
    labelNames: ["sandbox_id"],
    registers: [this.registry],
  });
  private readonly gauges = new Map<string, Gauge>();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  private histogram(name: string, help: string, labelNames: string[], buckets: number[]): Histogram {
    return new Histogram({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  private gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    const g = this.gauges.get(name) ?? new Gauge({ name, help, labelNames, registers: [this.registry] });
    this.gauges.set(name, g);
    return g;
  }

  netUsage(id: string, u: { egress_bytes: number; ingress_bytes: number; denied_packets: number }): void {
    if (u.egress_bytes > 0) this.guestBytes.labels(id, "egress").inc(u.egress_bytes);
    if (u.ingress_bytes > 0) this.guestBytes.labels(id, "ingress").inc(u.ingress_bytes);
    if (u.denied_packets > 0) this.guestDenied.labels(id).inc(u.denied_packets);
  }

  /** Drops a sandbox's traffic series (it was destroyed). */
  forgetSandbox(id: string): void {
    this.guestBytes.remove(id, "egress");
    this.guestBytes.remove(id, "ingress");
    this.guestDenied.remove(id);
  }

  request(route: string, method: string, status: number, seconds: number): void {
    this.pending.push(route, method, status, seconds);
    if (this.pending.length >= 4 * 256) this.countRequests();
  }

  private countRequests(): void {
    const p = this.pending;
    for (let i = 0; i < p.length; i += 4) {
      this.httpRequests.labels(p[i] as string, p[i + 1] as string, String(p[i + 2])).inc();
      this.httpLatency.labels(p[i] as string, p[i + 1] as string).observe(p[i + 3] as number);
    }
    p.length = 0;
  }

  vmOp(op: string, ok: boolean, seconds: number): void {
    this.vmOps.labels(op, ok ? "ok" : "error").observe(seconds);
    if (!ok) this.vmOpErrors.labels(op).inc();
  }

  /** The exposition text, with the gauges read at scrape time. */
  async render(sandboxesByState: Record<string, number>, extra: Record<string, number>): Promise<string> {
    const byState = this.gauge("createos_sandboxes", "Sandboxes by state (all tenants).", ["state"]);
    byState.reset();
    for (const [state, n] of Object.entries(sandboxesByState)) byState.labels(state).set(n);
    for (const [name, v] of Object.entries(extra)) this.gauge(name, name.replace(/_/g, " ")).set(v);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
