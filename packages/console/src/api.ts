/**
 * The console's only ways to the server: the SDK's browser build and the shell-ws WebSocket. The API key
 * lives in sessionStorage — this tab only, gone when it closes, never sent by the browser on its own
 * (docs/console.md says why this rather than a cookie session).
 */
import { CreateosSandboxClient, Sandbox } from "@createos-sandbox/sdk/browser";

const STORAGE = "createos-sandbox.api-key";
export const SHELL_WS_PROTOCOL = "createos-sandbox.shell.v1";
const BEARER = "base64url.bearer.authorization.k8s.io.";

export const savedKey = (): string | null => sessionStorage.getItem(STORAGE);
export const saveKey = (key: string): void => sessionStorage.setItem(STORAGE, key);
export const forgetKey = (): void => sessionStorage.removeItem(STORAGE);

const options = (apiKey: string, fetchImpl?: typeof fetch) => ({
  apiKey,
  baseUrl: location.origin,
  ...(fetchImpl ? { fetch: fetchImpl } : {}),
});

export const clientFor = (apiKey: string): CreateosSandboxClient =>
  new CreateosSandboxClient(options(apiKey));

/** The message to show for a failure: the SDK carries the server's own words. */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The shell-ws URL and subprotocols: a browser cannot set X-Api-Key on a WebSocket, so the key rides as a bearer. */
export function shellSocket(apiKey: string, sandboxId: string): WebSocket {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/v1/sandboxes/${encodeURIComponent(sandboxId)}/shell-ws`;
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(apiKey)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
  const ws = new WebSocket(url, [SHELL_WS_PROTOCOL, BEARER + b64]);
  ws.binaryType = "arraybuffer";
  return ws;
}

/** A fetch over XMLHttpRequest: the one browser API that reports upload progress. */
export function xhrFetch(onProgress: (sent: number, total: number) => void): typeof fetch {
  return (input, init) =>
    new Promise<Response>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(init?.method ?? "GET", input instanceof Request ? input.url : String(input));
      xhr.responseType = "arraybuffer";
      new Headers(init?.headers).forEach((v, k) => {
        if (k !== "user-agent" && k !== "content-length") xhr.setRequestHeader(k, v);
      });
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total);
      xhr.onload = () => {
        const headers = new Headers();
        for (const line of xhr.getAllResponseHeaders().trim().split(/\r?\n/)) {
          const at = line.indexOf(":");
          if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
        }
        const body = xhr.status === 204 || xhr.status === 304 ? null : (xhr.response as ArrayBuffer);
        resolve(new Response(body, { status: xhr.status, headers }));
      };
      xhr.onerror = () => reject(new TypeError("the upload could not reach the server"));
      xhr.onabort = () => reject(new DOMException("upload cancelled", "AbortError"));
      init?.signal?.addEventListener("abort", () => xhr.abort());
      xhr.send((init?.body as XMLHttpRequestBodyInit | null | undefined) ?? null);
    });
}

/** Uploads `file` to an absolute guest path, reporting progress as a fraction 0–1. */
export async function uploadFile(
  apiKey: string,
  sandboxId: string,
  path: string,
  file: Blob,
  onProgress: (fraction: number) => void,
): Promise<void> {
  const sb = await Sandbox.connect(
    sandboxId,
    options(
      apiKey,
      xhrFetch((sent, total) => onProgress(total > 0 ? sent / total : 0)),
    ),
  );
  await sb.files.upload(path, file);
  onProgress(1);
}
