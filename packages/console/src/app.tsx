/** Sign-in, navigation and the hash router (`#/…`: no server route beyond /console is needed). */
import type { CreateosSandboxClient } from "@createos-sandbox/sdk/browser";
import { useEffect, useState } from "preact/hooks";
import { clientFor, errorText, forgetKey, saveKey, savedKey } from "./api";
import { CreateForm } from "./create";
import { SandboxDetail } from "./detail";
import { SandboxList } from "./list";
import { Resources } from "./resources";

export interface Session {
  key: string;
  client: CreateosSandboxClient;
  user: string;
}

const hashPath = () => location.hash.replace(/^#/, "") || "/";

function useHashPath(): string {
  const [path, setPath] = useState(hashPath());
  useEffect(() => {
    const on = () => setPath(hashPath());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return path;
}

export const go = (path: string): void => {
  location.hash = path;
};

function SignIn(props: { onSession: (s: Session) => void; notice?: string }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(props.notice ?? "");
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const client = clientFor(key.trim());
      const me = await client.whoami();
      saveKey(key.trim());
      props.onSession({ key: key.trim(), client, user: me.user_id });
    } catch (err) {
      setError(`Sign-in refused: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>createos-sandbox</h1>
      <form onSubmit={submit}>
        <label for="apikey">API key</label>
        <input
          id="apikey"
          type="password"
          autocomplete="off"
          required
          value={key}
          onInput={(e) => setKey(e.currentTarget.value)}
        />
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <p class="hint">
          The key stays in this tab only (sessionStorage). The first user's key is in
          <code> &lt;data-dir&gt;/admin-api-key</code>.
        </p>
      </form>
    </main>
  );
}

const NAV: [string, string][] = [
  ["/", "Sandboxes"],
  ["/new", "Create"],
  ["/networks", "Networks"],
  ["/disks", "Disks"],
  ["/templates", "Templates"],
];

export function App() {
  const [session, setSession] = useState<Session | undefined>();
  const [restoring, setRestoring] = useState(savedKey() !== null);
  const [notice, setNotice] = useState<string | undefined>();
  const path = useHashPath();
  useEffect(() => {
    const key = savedKey();
    if (key === null) return;
    const client = clientFor(key);
    client
      .whoami()
      .then((me) => setSession({ key, client, user: me.user_id }))
      .catch((e) => {
        forgetKey();
        setNotice(`Signed out: ${errorText(e)}`);
      })
      .finally(() => setRestoring(false));
  }, []);
  if (restoring) return <p class="loading">Loading…</p>;
  if (!session) return <SignIn onSession={setSession} {...(notice ? { notice } : {})} />;
  const signOut = () => {
    forgetKey();
    setSession(undefined);
  };
  const sb = /^\/sb\/([^/]+)(?:\/([a-z]+))?$/.exec(path);
  const section = sb ? "/" : path;
  return (
    <>
      <header>
        <strong class="brand">createos-sandbox</strong>
        <nav aria-label="Main">
          {NAV.map(([p, label]) => (
            <a key={p} href={`#${p}`} aria-current={section === p ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {session.user}{" "}
          <button type="button" class="link" onClick={signOut}>
            Sign out
          </button>
        </span>
      </header>
      <main>
        {sb ? (
          <SandboxDetail session={session} id={decodeURIComponent(sb[1]!)} tab={sb[2] ?? "overview"} />
        ) : path === "/new" ? (
          <CreateForm session={session} />
        ) : path === "/networks" || path === "/disks" || path === "/templates" ? (
          <Resources session={session} kind={path.slice(1) as "networks" | "disks" | "templates"} />
        ) : (
          <SandboxList session={session} />
        )}
      </main>
    </>
  );
}
