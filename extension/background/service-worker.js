// The service worker: the only place that talks to the daemon. Content scripts open a port per
// batch of files; the popup and options ask for the daemon's status and tell it when sites change.

import "../shared/bridge.js";
import { loadSettings, onSettingsChanged, protectionActive } from "../shared/settings.js";
import { syncContentScripts } from "./content-scripts.js";
import { DaemonClient } from "./daemon-client.js";
import { serveProtectPort } from "./upload-protection.js";

const { Message, PROTECT_PORT } = globalThis.LowKeyBridge;

const client = new DaemonClient({
  loadSettings,
  clientName: `LowKey extension ${chrome.runtime.getManifest().version}`,
});

chrome.runtime.onInstalled.addListener(({ reason }) => {
  syncContentScripts();
  if (reason === chrome.runtime.OnInstalledReason.INSTALL) chrome.runtime.openOptionsPage();
});
chrome.runtime.onStartup.addListener(syncContentScripts);
chrome.permissions.onAdded.addListener(syncContentScripts);
chrome.permissions.onRemoved.addListener(syncContentScripts);

onSettingsChanged((settings, previous) => {
  if (settings.token !== previous.token || settings.port !== previous.port) client.disconnect();
  if (JSON.stringify(settings.sites.map((site) => site.host)) !== JSON.stringify(previous.sites.map((site) => site.host))) {
    syncContentScripts();
  }
});

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === PROTECT_PORT && port.sender?.tab) serveProtectPort(port, client);
});

/** runtime messages: [handler, who may send it] */
const HANDLERS = {
  [Message.SITE_STATE]: [async (message, sender) => ({
    active: protectionActive(await loadSettings(), new URL(sender.url).hostname),
  }), fromContentScript],
  [Message.DAEMON_STATUS]: [(message) => client.status({ reconnect: Boolean(message.reconnect) }), fromExtensionPage],
  [Message.SITES_CHANGED]: [async () => ({ matches: await syncContentScripts() }), fromExtensionPage],
};

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  const [handler, allowed] = HANDLERS[message?.type] ?? [];
  if (!handler || sender.id !== chrome.runtime.id || !allowed(sender)) return false;
  handler(message, sender).then(sendResponse, (error) => sendResponse({ error: String(error) }));
  return true;
});

function fromContentScript(sender) {
  return Boolean(sender.tab) && typeof sender.url === "string" && /^https?:/.test(sender.url);
}

function fromExtensionPage(sender) {
  return typeof sender.url === "string" && sender.url.startsWith(chrome.runtime.getURL(""));
}
