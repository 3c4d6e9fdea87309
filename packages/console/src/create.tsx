/** The create form: shape and rootfs from the server's catalogs, name, envs, auto-pause. */
import type { CreateSandboxRequest } from "@createos-sandbox/sdk/browser";
import { useState } from "preact/hooks";
import { errorText } from "./api";
import { type Session, go } from "./app";
import { ErrorLine, usePoll } from "./util";

/** `KEY=value` lines → envs; blank lines are skipped, anything else is an error the user can fix. */
export function parseEnvs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`envs line ${i + 1}: expected KEY=value`);
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

export function CreateForm(props: { session: Session }) {
  const { client } = props.session;
  const catalogs = usePoll(async () => {
    const [shapes, rootfs] = await Promise.all([client.listShapes(), client.listRootfs()]);
    return { shapes, rootfs };
  }, 0);
  const [shape, setShape] = useState("");
  const [rootfs, setRootfs] = useState("");
  const [name, setName] = useState("");
  const [envs, setEnvs] = useState("");
  const [pauseAfter, setPauseAfter] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const c = catalogs.value;
  const submit = async (e: Event) => {
    e.preventDefault();
    setError("");
    try {
      const req: CreateSandboxRequest = { shape: shape || c?.shapes[0]?.id || "" };
      if (rootfs) req.rootfs = rootfs;
      if (name.trim()) req.name = name.trim();
      const env = parseEnvs(envs);
      if (Object.keys(env).length) req.envs = env;
      if (pauseAfter.trim()) req.auto_pause_after_seconds = Number(pauseAfter);
      setBusy(true);
      const sb = await client.createSandbox(req);
      go(`/sb/${encodeURIComponent(sb.id)}`);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section>
      <h1>New sandbox</h1>
      <ErrorLine error={catalogs.error} />
      {!c ? (
        <p class="loading">Loading the catalogs…</p>
      ) : (
        <form class="form" onSubmit={submit}>
          <label for="shape">Shape</label>
          <select
            id="shape"
            value={shape || c.shapes[0]?.id}
            onChange={(e) => setShape(e.currentTarget.value)}
          >
            {c.shapes.map((s) => (
              <option key={s.id} value={s.id}>
                {s.id} — {s.vcpu} vCPU, {s.mem_mib} MiB, {s.default_disk_mib} MiB disk
              </option>
            ))}
          </select>
          <label for="rootfs">Rootfs</label>
          <select
            id="rootfs"
            value={rootfs || c.rootfs.default}
            onChange={(e) => setRootfs(e.currentTarget.value)}
          >
            {c.rootfs.rootfs.map((r) => {
              const entry = c.rootfs.entries?.find((x) => x.name === r);
              return (
                <option key={r} value={r}>
                  {r}
                  {r === c.rootfs.default ? " (default)" : ""}
                  {entry?.description ? ` — ${entry.description}` : ""}
                </option>
              );
            })}
          </select>
          <label for="name">Name (optional)</label>
          <input id="name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          <label for="envs">Envs (KEY=value, one a line)</label>
          <textarea id="envs" rows={3} value={envs} onInput={(e) => setEnvs(e.currentTarget.value)} />
          <label for="autopause">Auto-pause after idle seconds (60–86400, empty = off)</label>
          <input
            id="autopause"
            inputMode="numeric"
            value={pauseAfter}
            onInput={(e) => setPauseAfter(e.currentTarget.value)}
          />
          <div>
            <button type="submit" disabled={busy}>
              {busy ? "Creating…" : "Create"}
            </button>
          </div>
          <ErrorLine error={error} />
        </form>
      )}
    </section>
  );
}
