import type { Command } from "../../framework/command.js";
import { formatMib, renderTable } from "../../ui/table.js";

export const shapesCommand: Command = {
  kind: "command",
  name: "shapes",
  summary: "List available sizes (vCPU / RAM / disk)",
  usage: "",
  args: { max: 0 },
  examples: ["createos sandbox shapes", "createos sandbox shapes -o json | jq -r '.[].id'"],
  async run(ctx) {
    const api = await ctx.api();
    const shapes = await api.client.listShapes();
    ctx.out.result(shapes, () =>
      renderTable(
        [
          { header: "id", get: (s) => s.id },
          {
            header: "vcpu",
            get: (s) => (s.cpu_quota_pct ? `${s.cpu_quota_pct / 100}` : String(s.vcpu)),
            right: true,
          },
          { header: "memory", get: (s) => formatMib(s.mem_mib), right: true },
          { header: "disk", get: (s) => formatMib(s.default_disk_mib), right: true },
        ],
        shapes,
      ),
    );
    return 0;
  },
};

export const rootfsCommand: Command = {
  kind: "command",
  name: "rootfs",
  aliases: ["images"],
  summary: "List built-in OS images",
  usage: "",
  args: { max: 0 },
  examples: ["createos sandbox rootfs"],
  async run(ctx) {
    const api = await ctx.api();
    const data = await api.client.listRootfs();
    const rows = data.entries?.length
      ? data.entries
      : data.rootfs.map(
          (name) =>
            ({ name }) as { name: string; description?: string; deprecated?: boolean; successor?: string },
        );
    ctx.out.result(data, () =>
      renderTable(
        [
          {
            header: "name",
            get: (r) => r.name + (r.name === data.default ? ctx.out.style.dim(" (default)") : ""),
          },
          { header: "description", get: (r) => r.description ?? "" },
          {
            header: "note",
            get: (r) => (r.deprecated ? `deprecated${r.successor ? `, use ${r.successor}` : ""}` : ""),
          },
        ],
        rows,
      ),
    );
    return 0;
  },
};
