/** One sandbox: what `get` shows, its actions, and the terminal and files tabs. */
import type { Sandbox, SandboxView } from "@createos-sandbox/sdk/browser";
import { useRef, useState } from "preact/hooks";
import { errorText } from "./api";
import { type Session, go } from "./app";
import { Files } from "./files";
import { Terminal } from "./terminal";
import { ErrorLine, Status, age, autoPause, bytes, usePoll } from "./util";

const TABS = ["overview", "terminal", "files"];

function Actions(props: { sb: Sandbox; onDone: () => void }) {
  const [busy, setBusy] = useState("");
  const [error, setError] = useState("");
  const [confirming, setConfirming] = useState(false);
  const { sb } = props;
  const run = (label: string, act: () => Promise<unknown>) => async () => {
    setBusy(label);
    setError("");
    try {
      await act();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy("");
      props.onDone();
    }
  };
  const s = sb.status;
  return (
    <div class="actions">
      <button type="button" disabled={!!busy || s !== "running"} onClick={run("pause", () => sb.pause())}>
        {busy === "pause" ? "Pausing…" : "Pause"}
      </button>
      <button type="button" disabled={!!busy || s !== "paused"} onClick={run("resume", () => sb.resume())}>
        {busy === "resume" ? "Resuming…" : "Resume"}
      </button>
      <button
        type="button"
        disabled={!!busy || (s !== "running" && s !== "paused")}
        onClick={run("fork", async () => go(`/sb/${encodeURIComponent((await sb.fork()).id)}`))}
      >
        {busy === "fork" ? "Forking…" : "Fork"}
      </button>
      {confirming ? (
        <fieldset class="confirm">
          <legend class="visually-hidden">Confirm destroy</legend>
          Destroy {sb.name ?? sb.id} for good?{" "}
          <button
            type="button"
            class="danger"
            ref={(el) => el?.focus()}
            onClick={run("destroy", async () => {
              await sb.destroy();
              go("/");
            })}
          >
            Yes, destroy
          </button>{" "}
          <button type="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </fieldset>
      ) : (
        <button type="button" class="danger" disabled={!!busy} onClick={() => setConfirming(true)}>
          Destroy…
        </button>
      )}
      <ErrorLine error={error} />
    </div>
  );
}

function Row(props: { k: string; children: preact.ComponentChildren }) {
  return (
    <>
      <dt>{props.k}</dt>
      <dd>{props.children}</dd>
    </>
  );
}

function Overview(props: { sb: Sandbox; view: SandboxView }) {
  const v = props.view;
  const extra = usePoll(
    async () => {
      const [bw, disks] = await Promise.all([
        props.sb.getBandwidth().catch(() => undefined),
        props.sb.listDisks().catch(() => []),
      ]);
      return { bw, disks };
    },
    5000,
    [v.id],
  );
  const bw = extra.value?.bw;
  const ingress = v.ingress_url_template;
  return (
    <dl class="facts">
      <Row k="ID">{v.id}</Row>
      <Row k="Status">
        <Status status={v.status} />
      </Row>
      <Row k="Shape">{v.shape ?? "—"}</Row>
      <Row k="Resources">
        {v.vcpu} vCPU, {v.mem_mib} MiB memory, {v.disk_mib} MiB disk
      </Row>
      <Row k="Rootfs">{v.rootfs ?? "—"}</Row>
      <Row k="IP">{v.ip ?? "—"}</Row>
      <Row k="Host">{v.host_id ?? "—"}</Row>
      <Row k="Region">{v.region ?? "—"}</Row>
      <Row k="Auto-pause">{autoPause(v.auto_pause_after_seconds)}</Row>
      <Row k="Firewall (egress)">{v.egress?.length ? v.egress.join(", ") : "allow all"}</Row>
      <Row k="Envs">{v.envs?.length ? v.envs.join(", ") : "—"}</Row>
      <Row k="Ingress">
        {!v.ingress_enabled
          ? "off"
          : ingress && /^https?:\/\//.test(ingress)
            ? [80, 8080].map((p) => (
                <a key={p} href={ingress.replace("<port>", String(p))} rel="noreferrer" target="_blank">
                  {ingress.replace("<port>", String(p))}{" "}
                </a>
              ))
            : "on"}
      </Row>
      <Row k="Bandwidth">
        {!bw ? (
          "—"
        ) : bw.quota_bytes < 0 ? (
          `${bytes(bw.used_bytes)} out, unmetered`
        ) : (
          <>
            <meter min={0} max={bw.quota_bytes} value={bw.used_bytes} /> {bytes(bw.used_bytes)} of{" "}
            {bytes(bw.quota_bytes)}
            {bw.capped ? " (capped)" : ""}
          </>
        )}
      </Row>
      <Row k="Disks">{extra.value?.disks.length ? extra.value.disks.map((d) => d.name).join(", ") : "—"}</Row>
      <Row k="Created">
        {v.created_at} ({age(v.created_at)} ago)
      </Row>
      {v.running_at && <Row k="Running since">{v.running_at}</Row>}
      {v.paused_at && <Row k="Paused at">{v.paused_at}</Row>}
      {v.last_resumed_at && <Row k="Last resumed">{v.last_resumed_at}</Row>}
      {v.forked_from && (
        <Row k="Forked from">
          <a href={`#/sb/${encodeURIComponent(v.forked_from)}`}>{v.forked_from}</a>
        </Row>
      )}
      {v.spawn_ms !== undefined && <Row k="Spawn">{v.spawn_ms} ms</Row>}
    </dl>
  );
}

export function SandboxDetail(props: { session: Session; id: string; tab: string }) {
  const handle = useRef<Sandbox | undefined>();
  const { value, error, reload } = usePoll(
    async () => {
      handle.current = await props.session.client.getSandbox(props.id);
      return handle.current.data;
    },
    2000,
    [props.id],
  );
  const sb = handle.current;
  const tab = TABS.includes(props.tab) ? props.tab : "overview";
  const base = `#/sb/${encodeURIComponent(props.id)}`;
  return (
    <section>
      <div class="bar">
        <h1>{value?.name ?? props.id}</h1>
        {value && <Status status={value.status} />}
      </div>
      <ErrorLine error={error} />
      {sb && value && (
        <>
          <Actions sb={sb} onDone={reload} />
          <nav class="tabs" aria-label="Sandbox">
            {TABS.map((t) => (
              <a
                key={t}
                href={t === "overview" ? base : `${base}/${t}`}
                aria-current={t === tab ? "page" : undefined}
              >
                {t}
              </a>
            ))}
          </nav>
          {tab === "overview" && <Overview sb={sb} view={value} />}
          {tab === "terminal" &&
            (value.status === "running" ? (
              <Terminal session={props.session} id={value.id} />
            ) : (
              <p>The terminal needs a running sandbox (this one is {value.status}).</p>
            ))}
          {tab === "files" &&
            (value.status === "running" ? (
              <Files session={props.session} sb={sb} />
            ) : (
              <p>Files need a running sandbox (this one is {value.status}).</p>
            ))}
        </>
      )}
    </section>
  );
}
