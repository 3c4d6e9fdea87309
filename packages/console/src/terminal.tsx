/**
 * The terminal tab: xterm.js on the shell-ws WebSocket. Keystrokes go as binary messages, output comes
 * back raw; the grid follows the element's size (fit add-on) and each change is sent as a resize message.
 */
import { FitAddon } from "@xterm/addon-fit";
import { Terminal as XTerm } from "@xterm/xterm";
import { useEffect, useRef, useState } from "preact/hooks";
import { shellSocket } from "./api";
import type { Session } from "./app";

export function Terminal(props: { session: Session; id: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [state, setState] = useState("connecting…");
  useEffect(() => {
    const term = new XTerm({ cursorBlink: true, fontSize: 14, scrollback: 5000, convertEol: false });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current!);
    fit.fit();
    const enc = new TextEncoder();
    const ws = shellSocket(props.session.key, props.id);
    const sendSize = () => {
      if (ws.readyState === WebSocket.OPEN)
        ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
    };
    ws.onopen = () => {
      setState("connected");
      sendSize();
      term.focus();
    };
    ws.onmessage = (e) => term.write(new Uint8Array(e.data as ArrayBuffer));
    ws.onclose = (e) => {
      const why =
        e.code === 1000 ? "the shell exited" : `closed (${e.code}${e.reason ? `: ${e.reason}` : ""})`;
      setState(why);
      term.write(`\r\n\x1b[2m[${why}]\x1b[0m\r\n`);
    };
    ws.onerror = () => setState("the connection failed");
    const input = term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(enc.encode(d)));
    const binary = term.onBinary(
      (d) => ws.readyState === WebSocket.OPEN && ws.send(Uint8Array.from(d, (c) => c.charCodeAt(0))),
    );
    const resized = term.onResize(sendSize);
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(host.current!);
    return () => {
      observer.disconnect();
      input.dispose();
      binary.dispose();
      resized.dispose();
      ws.onclose = null;
      ws.close(1000);
      term.dispose();
    };
  }, [props.id, props.session.key]);
  return (
    <div class="terminal-tab">
      <p class="sub" aria-live="polite">
        Shell: <span data-testid="term-state">{state}</span>. Copy with the selection (Ctrl+Shift+C or the
        menu), paste with Ctrl+Shift+V.
      </p>
      <div class="terminal" ref={host} />
    </div>
  );
}
