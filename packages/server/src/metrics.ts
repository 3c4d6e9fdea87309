/** Prometheus metrics through prom-client: our request, VM-operation and sandbox series plus process defaults. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const VM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];

interface Bound {
  count: Map<number, { inc(): void }>;
  latency: { observe(v: number): void };
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: "createos_http_requests_total",
    help: "HTTP requests by route, method and status.",
    labelNames: ["route", "method", "status"] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: "createos_http_request_duration_seconds",
    help: "HTTP request latency by route.",
    labelNames: ["route", "method"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly sandboxes = new Gauge({
    name: "createos_sandboxes",
    help: "Sandboxes by state (all tenants).",
    labelNames: ["state"] as const,
    registers: [this.registry],
  });
  private readonly vmOps = new Histogram({
    name: "createos_vm_operation_duration_seconds",
    help: "Host daemon operations by kind and result.",
    labelNames: ["op", "result"] as const,
    buckets: VM_BUCKETS,
    registers: [this.registry],
  });
  private readonly vmOpErrors = new Counter({
    name: "createos_vm_operation_errors_total",
    help: "Failed host daemon operations.",
    labelNames: ["op"] as const,
    registers: [this.registry],
  });
  private readonly gauges = new Map<string, Gauge>();
  /** Label-bound series per (method, route), resolved once: this runs on every request. */
  private readonly bound = new Map<string, Bound>();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  request(route: string, method: string, status: number, seconds: number): void {
    const id = `${method} ${route}`;
    let b = this.bound.get(id);
    if (!b) {
      b = { count: new Map(), latency: this.latency.labels(route, method) };
      this.bound.set(id, b);
    }
    let c = b.count.get(status);
    if (!c) {
      c = this.requests.labels(route, method, String(status));
      b.count.set(status, c);
    }
    c.inc();
    b.latency.observe(seconds);
  }

  vmOp(op: string, ok: boolean, seconds: number): void {
    this.vmOps.labels(op, ok ? "ok" : "error").observe(seconds);
    if (!ok) this.vmOpErrors.labels(op).inc();
  }

  /** The exposition text, with the gauges read at scrape time. */
  async render(sandboxesByState: Record<string, number>, extra: Record<string, number>): Promise<string> {
    this.sandboxes.reset();
    for (const [state, n] of Object.entries(sandboxesByState)) this.sandboxes.labels(state).set(n);
    for (const [name, v] of Object.entries(extra)) {
      let g = this.gauges.get(name);
      if (!g) {
        g = new Gauge({
          name,
          help: name.replace(/^createos_/, "").replace(/_/g, " "),
          registers: [this.registry],
        });
        this.gauges.set(name, g);
      }
      g.set(v);
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
