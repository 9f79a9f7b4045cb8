// How the popup and the options page put the daemon's status into words.

import "./bridge.js";

/** Ask the worker for the daemon's status; reconnect: drop the connection first (new settings). */
export function fetchDaemonStatus({ reconnect = false } = {}) {
  return chrome.runtime.sendMessage({ type: globalThis.LowKeyBridge.Message.DAEMON_STATUS, reconnect });
}

/** {tone: "ok" | "error", text} for a status from the worker. */
export function describeDaemonStatus(status) {
  if (status?.state === "connected") {
    const version = status.daemonVersion ? `daemon ${status.daemonVersion}, ` : "";
    return { tone: "ok", text: `Connected — ${version}protocol v${status.protocol}, running on ${status.device}` };
  }
  return { tone: "error", text: status?.message ?? "The extension's service worker did not answer." };
}
