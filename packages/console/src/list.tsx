/** Every sandbox of the signed-in user, refreshed every 2 s, filtered by status. */
import { SANDBOX_STATUSES, type SandboxStatus } from "@createos-sandbox/protocol/api";
import { useState } from "preact/hooks";
import type { Session } from "./app";
import { ErrorLine, Status, Table, age, autoPause, usePoll } from "./util";

export function SandboxList(props: { session: Session }) {
  const [status, setStatus] = useState<SandboxStatus | "">("");
  const { value, error } = usePoll(
    async () => {
      const all = await props.session.client.listSandboxes(status ? { status } : {});
      return all.map((s) => s.data);
    },
    2000,
    [status],
  );
  return (
    <section>
      <div class="bar">
        <h1>Sandboxes</h1>
        <label>
          Status{" "}
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value as SandboxStatus | "")}>
            <option value="">all</option>
            {SANDBOX_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <a class="button" href="#/new">
          New sandbox
        </a>
      </div>
      <ErrorLine error={error} />
      {value === undefined ? (
        <p class="loading">Loading…</p>
      ) : value.length === 0 ? (
        <p>No sandboxes{status ? ` with status ${status}` : ""}.</p>
      ) : (
        <Table head={["Name", "Status", "Shape", "Rootfs", "IP", "Age", "Auto-pause"]}>
          {value.map((s) => (
            <tr key={s.id} data-id={s.id}>
              <td>
                <a href={`#/sb/${encodeURIComponent(s.id)}`}>{s.name ?? s.id}</a>
                <div class="sub">{s.id}</div>
              </td>
              <td>
                <Status status={s.status} />
              </td>
              <td>{s.shape ?? `${s.vcpu} vCPU / ${s.mem_mib} MiB`}</td>
              <td>{s.rootfs ?? "—"}</td>
              <td>{s.ip ?? "—"}</td>
              <td>{age(s.created_at)}</td>
              <td>{autoPause(s.auto_pause_after_seconds)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}
