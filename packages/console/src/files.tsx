/** The files tab: list a guest directory (through exec), download a file, upload one with progress. */
import type { Sandbox } from "@createos-sandbox/sdk/browser";
import { useState } from "preact/hooks";
import { errorText, uploadFile } from "./api";
import type { Session } from "./app";
import { ErrorLine, Table, bytes, usePoll } from "./util";

interface Entry {
  kind: string;
  size: number;
  name: string;
}

const join = (dir: string, name: string) => (dir.endsWith("/") ? dir + name : `${dir}/${name}`);
const parent = (dir: string) => dir.replace(/\/[^/]+\/?$/, "") || "/";

/** GNU find's `%y\t%s\t%f` lines, directories first. */
export function parseListing(stdout: string): Entry[] {
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [kind = "?", size = "0", ...name] = l.split("\t");
      return { kind, size: Number(size), name: name.join("\t") };
    })
    .sort((a, b) =>
      (a.kind === "d") !== (b.kind === "d") ? (a.kind === "d" ? -1 : 1) : a.name.localeCompare(b.name),
    );
}

export function Files(props: { session: Session; sb: Sandbox }) {
  const [dir, setDir] = useState("/root");
  const [typed, setTyped] = useState("/root");
  const [error, setError] = useState("");
  const [progress, setProgress] = useState<number | undefined>();
  const id = props.sb.id;
  const listing = usePoll(
    async () => {
      const r = await props.sb.runCommand("find", [
        dir,
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "-printf",
        "%y\\t%s\\t%f\\n",
      ]);
      if (r.result.exit_code !== 0)
        throw new Error(r.result.stderr.trim() || `find exited ${r.result.exit_code}`);
      return parseListing(r.result.stdout);
    },
    0,
    [dir, id],
  );
  const open = (d: string) => {
    setDir(d);
    setTyped(d);
  };
  const download = async (name: string) => {
    setError("");
    try {
      const data = await props.sb.files.download(join(dir, name));
      const url = URL.createObjectURL(new Blob([data], { type: "application/octet-stream" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const upload = async (e: Event) => {
    const input = e.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    if (!file) return;
    setError("");
    setProgress(0);
    try {
      await uploadFile(props.session.key, id, join(dir, file.name), file, setProgress);
      listing.reload();
    } catch (err) {
      setError(errorText(err));
    } finally {
      input.value = "";
      setTimeout(() => setProgress(undefined), 1500);
    }
  };
  return (
    <div class="files">
      <form
        class="bar"
        onSubmit={(e) => {
          e.preventDefault();
          open(typed.trim() || "/");
        }}
      >
        <label for="dir">Directory</label>
        <input id="dir" value={typed} onInput={(e) => setTyped(e.currentTarget.value)} />
        <button type="submit">Open</button>
        <button type="button" onClick={() => open(parent(dir))} disabled={dir === "/"}>
          Up
        </button>
        <label class="button">
          Upload a file
          <input type="file" class="visually-hidden" onChange={upload} aria-label="Upload a file" />
        </label>
      </form>
      {progress !== undefined && (
        <p>
          <progress max={1} value={progress} aria-label="Upload progress" /> {Math.round(progress * 100)} %
        </p>
      )}
      <ErrorLine error={error || listing.error} />
      {listing.value && (
        <Table head={["Name", "Size", ""]}>
          {listing.value.map((f) => (
            <tr key={f.name} data-name={f.name}>
              <td>
                {f.kind === "d" ? (
                  <button type="button" class="link" onClick={() => open(join(dir, f.name))}>
                    {f.name}/
                  </button>
                ) : (
                  f.name
                )}
              </td>
              <td>{f.kind === "d" ? "—" : bytes(f.size)}</td>
              <td>
                {f.kind === "f" && (
                  <button type="button" class="link" onClick={() => download(f.name)}>
                    Download
                  </button>
                )}
              </td>
            </tr>
          ))}
        </Table>
      )}
    </div>
  );
}
