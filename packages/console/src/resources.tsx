/** Networks, disks and templates: lists, and a template's build log followed live. */
import { useEffect, useState } from "preact/hooks";
import { errorText } from "./api";
import type { Session } from "./app";
import { ErrorLine, Status, Table, age, usePoll } from "./util";

type Kind = "networks" | "disks" | "templates";
type Cell = string | number | preact.JSX.Element;

function TemplateLog(props: { session: Session; id: string }) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const templates = props.session.client.templates;
  useEffect(() => {
    const ac = new AbortController();
    setText("");
    (async () => {
      try {
        for await (const ev of templates.followLogs(props.id, { signal: ac.signal }))
          setText((t) => t + JSON.stringify(ev) + "\n");
      } catch (e) {
        if (!ac.signal.aborted) setError(errorText(e));
      }
    })();
    return () => ac.abort();
  }, [templates, props.id]);
  return (
    <section aria-label="Build log">
      <ErrorLine error={error} />
      <pre class="log">{text || "(no output yet)"}</pre>
    </section>
  );
}

export function Resources(props: { session: Session; kind: Kind }) {
  const { client } = props.session;
  const [logOf, setLogOf] = useState<string | undefined>();
  const { value, error } = usePoll(
    async (): Promise<{ head: string[]; rows: [string, Cell[]][] }> => {
      if (props.kind === "networks") {
        const list = await client.networks.list();
        return {
          head: ["Name", "ID", "Members", "Age"],
          rows: list.map((n) => [n.id, [n.name, n.id, n.member_count ?? "—", age(n.created_at)]]),
        };
      }
      if (props.kind === "disks") {
        const list = await client.disks.list();
        return {
          head: ["Name", "ID", "Kind", "Age"],
          rows: list.map((d) => [d.id, [d.name, d.id, d.kind, age(d.created_at)]]),
        };
      }
      const list = await client.templates.list();
      return {
        head: ["Name", "ID", "Base", "Status", "Age", "Log"],
        rows: list.map((t) => [
          t.id,
          [
            t.name,
            t.id,
            t.base,
            <Status key="s" status={t.status} />,
            age(t.created_at),
            <button key="l" type="button" class="link" onClick={() => setLogOf(t.id)}>
              Build log
            </button>,
          ],
        ]),
      };
    },
    5000,
    [props.kind],
  );
  const title = props.kind[0]!.toUpperCase() + props.kind.slice(1);
  return (
    <section>
      <h1>{title}</h1>
      <ErrorLine error={error} />
      {!value ? (
        <p class="loading">Loading…</p>
      ) : value.rows.length === 0 ? (
        <p>No {props.kind} yet.</p>
      ) : (
        <Table head={value.head}>
          {value.rows.map(([id, cells]) => (
            <tr key={id}>
              {cells.map((c, i) => (
                // biome-ignore lint/suspicious/noArrayIndexKey: columns are fixed per kind
                <td key={i}>{c}</td>
              ))}
            </tr>
          ))}
        </Table>
      )}
      {props.kind === "templates" && logOf && <TemplateLog session={props.session} id={logOf} />}
    </section>
  );
}
