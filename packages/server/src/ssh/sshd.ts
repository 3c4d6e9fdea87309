/**
 * The guest's own sshd, for the jump-host path (`ssh -J <id>@gateway root@…`, protocol.md §3.7): before a
 * `direct-tcpip` channel to guest port 22, the sandbox's `ssh_pubkeys` are added to root's
 * authorized_keys (lines already there are kept) and sshd is started if it is not running, so the user's
 * key authenticates end to end. Images without `/usr/sbin/sshd` are left alone (the channel then fails).
 */
import { SingleFlight } from "@createos-sandbox/hostd/sys/fs";
import type { HostDaemon } from "@createos-sandbox/protocol";
import type { SandboxRow } from "../store/types.js";

/** Keys arrive on stdin, one a line; exit 100 = no sshd in this image. */
const PREP = [
  "[ -x /usr/sbin/sshd ] || exit 100",
  "umask 077",
  "mkdir -p /root/.ssh",
  "A=/root/.ssh/authorized_keys",
  'touch "$A"',
  'while IFS= read -r k; do [ -z "$k" ] || grep -qxF "$k" "$A" || printf "%s\\n" "$k" >> "$A"; done',
  "mkdir -p /run/sshd && chmod 755 /run/sshd",
  "ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null",
  // A second sshd fails to bind while one listens: that is the state we want either way.
  "/usr/sbin/sshd >/dev/null 2>&1 || true",
].join("\n");

const flight = new SingleFlight<number>();

/** Exit code of the preparation (0 ready, 100 no sshd); concurrent calls for one sandbox share one run. */
export function prepareGuestSshd(daemon: HostDaemon, row: SandboxRow): Promise<number> {
  return flight.do(row.id, async () => {
    const stdin = Buffer.from(row.ssh_pubkeys.map((k) => `${k}\n`).join(""));
    const r = await daemon.exec(row.id, { argv: ["/bin/sh", "-c", PREP], stdin });
    return r.exit_code;
  });
}
