/**
 * The agent's channel: a virtio-serial port the guest sees as /dev/virtio-ports/org.createos.agent, and
 * the host as a Unix socket. It needs no guest network, so the agent is reachable even while the guest's
 * network is down or being reconfigured.
 */
import type { MachinePaths } from "../driver.js";

export const AGENT_PORT = "org.createos.agent";

export function agentChannelArgs(p: MachinePaths): string[] {
  return [
    "-device",
    "virtio-serial-device,max_ports=2",
    "-chardev",
    // wait=off: QEMU starts without anyone connected; the host daemon connects when it wants
    `socket,id=agent,path=${p.agent},server=on,wait=off`,
    "-device",
    `virtserialport,chardev=agent,name=${AGENT_PORT}`,
  ];
}
