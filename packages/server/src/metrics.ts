/** Prometheus metrics through prom-client: our request, VM-operation and sandbox series plus process defaults. */
import { Counter, Gauge, Histogram, type Metric, Registry, collectDefaultMetrics } from "prom-client";

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const VM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];

export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new RequestSeries(this.registry);
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
    this.requests.observe(route, method, status, seconds);
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

interface RouteSeries {
  labels: { route: string; method: string };
  /** Observations per bucket (not cumulative), the last one past every bound. */
  buckets: number[];
  sum: number;
  count: number;
  statuses: Map<number, number>;
}

/**
 * The request counter and latency histogram, counted on the request path in plain numbers — prom-client's
 * `labels(…).inc()` and `.observe()` resolve and check their labels anew on every call, a cost per request
 * — and handed to the registry at scrape time in the shape prom-client's own Counter and Histogram give it,
 * so the exposition text is the same.
 */
class RequestSeries {
  private readonly series = new Map<string, RouteSeries>();

  constructor(registry: Registry) {
    const register = (name: string, help: string, type: string, values: () => object[]) =>
      registry.registerMetric({
        name,
        help,
        type,
        aggregator: "sum",
        get: async () => ({ name, help, type, aggregator: "sum", values: values() }),
        reset: () => this.series.clear(),
      } as unknown as Metric);
    register("createos_http_requests_total", "HTTP requests by route, method and status.", "counter", () =>
      [...this.series.values()].flatMap((s) =>
        [...s.statuses].map(([status, value]) => ({
          labels: { ...s.labels, status: String(status) },
          value,
        })),
      ),
    );
    const name = "createos_http_request_duration_seconds";
    register(name, "HTTP request latency by route.", "histogram", () =>
      [...this.series.values()].flatMap((s) => {
        let acc = 0;
        const buckets = s.buckets.map((n, i) => {
          acc += n;
          const le = i < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[i]! : "+Inf";
          return { labels: { le }, sharedLabels: s.labels, value: acc, metricName: `${name}_bucket` };
        });
        const sum = { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${name}_sum` };
        const count = { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${name}_count` };
        return [...buckets, sum, count];
      }),
    );
  }

  observe(route: string, method: string, status: number, seconds: number): void {
    const key = `${method} ${route}`;
    let s = this.series.get(key);
    if (!s) {
      const buckets = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
      s = { labels: { route, method }, buckets, sum: 0, count: 0, statuses: new Map() };
      this.series.set(key, s);
    }
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    s.buckets[i]!++;
    s.sum += seconds;
    s.count++;
    s.statuses.set(status, (s.statuses.get(status) ?? 0) + 1);
  }
}
