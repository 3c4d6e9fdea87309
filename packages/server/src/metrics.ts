/** Prometheus text exposition, written by hand: counters and fixed-bucket histograms keyed by label sets. */

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const VM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120];

class Histogram {
  readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(readonly buckets: number[]) {}
  observe(labels: string, v: number): void {
    let s = this.series.get(labels);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(labels, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }
  render(name: string, help: string): string {
    let out = `# HELP ${name} ${help}\n# TYPE ${name} histogram\n`;
    for (const [labels, s] of this.series) {
      const sep = labels ? "," : "";
      this.buckets.forEach((b, i) => {
        out += `${name}_bucket{${labels}${sep}le="${b}"} ${s.counts[i]}\n`;
      });
      out += `${name}_bucket{${labels}${sep}le="+Inf"} ${s.count}\n`;
      out += `${name}_sum{${labels}} ${s.sum}\n${name}_count{${labels}} ${s.count}\n`;
    }
    return out;
  }
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly latency = new Histogram(LATENCY_BUCKETS);
  private readonly vmOps = new Histogram(VM_BUCKETS);
  private readonly vmOpErrors = new Map<string, number>();

  /** Label strings per (route, method[, status]), built once: this runs on every request. */
  private readonly labels = new Map<string, { series: string; perStatus: Map<number, string> }>();

  request(route: string, method: string, status: number, seconds: number): void {
    const id = `${method} ${route}`;
    let l = this.labels.get(id);
    if (!l) {
      l = { series: `route="${esc(route)}",method="${method}"`, perStatus: new Map() };
      this.labels.set(id, l);
    }
    let key = l.perStatus.get(status);
    if (!key) {
      key = `${l.series},status="${status}"`;
      l.perStatus.set(status, key);
    }
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    this.latency.observe(l.series, seconds);
  }

  vmOp(op: string, ok: boolean, seconds: number): void {
    this.vmOps.observe(`op="${op}",result="${ok ? "ok" : "error"}"`, seconds);
    if (!ok) this.vmOpErrors.set(op, (this.vmOpErrors.get(op) ?? 0) + 1);
  }

  render(sandboxesByState: Record<string, number>, extra: Record<string, number>): string {
    let out = "# HELP createos_http_requests_total HTTP requests by route, method and status.\n";
    out += "# TYPE createos_http_requests_total counter\n";
    for (const [k, v] of this.requests) out += `createos_http_requests_total{${k}} ${v}\n`;
    out += this.latency.render("createos_http_request_duration_seconds", "HTTP request latency by route.");
    out += "# HELP createos_sandboxes Sandboxes by state (all tenants).\n# TYPE createos_sandboxes gauge\n";
    for (const [state, n] of Object.entries(sandboxesByState))
      out += `createos_sandboxes{state="${state}"} ${n}\n`;
    out += this.vmOps.render(
      "createos_vm_operation_duration_seconds",
      "Host daemon operations by kind and result.",
    );
    out += "# HELP createos_vm_operation_errors_total Failed host daemon operations.\n";
    out += "# TYPE createos_vm_operation_errors_total counter\n";
    for (const [op, n] of this.vmOpErrors) out += `createos_vm_operation_errors_total{op="${op}"} ${n}\n`;
    for (const [name, v] of Object.entries(extra)) out += `# TYPE ${name} gauge\n${name} ${v}\n`;
    return out;
  }
}
