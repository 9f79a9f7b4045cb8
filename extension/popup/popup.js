// The toolbar popup: on/off for everything and for this site, the daemon's status, the preset,
// and the last photos. Opened as a tab (pinned, or by tests), it describes the tab used last.

import "../shared/bridge.js";
import { describeDaemonStatus, fetchDaemonStatus } from "../shared/daemon-status.js";
import { onRecentResultsChanged, recentResults } from "../shared/recent-results.js";
import { ENGINE_PRESETS, loadSettings, onSettingsChanged, updateSettings } from "../shared/settings.js";
import { findSite, matchPatterns, normalizeSite } from "../shared/sites.js";

const PRESET_LABELS = { fast: "Fast", standard: "Standard", strong: "Strong" };
const element = (id) => document.getElementById(id);

/** The web page this popup is about: the active tab, or the last used one when the popup is a tab. */
async function subjectTab() {
  const self = await chrome.tabs.getCurrent();
  if (!self) return (await chrome.tabs.query({ active: true, lastFocusedWindow: true }))[0] ?? null;
  const others = (await chrome.tabs.query({})).filter((tab) => tab.id !== self.id && /^https?:/.test(tab.url ?? ""));
  return others.sort((a, b) => (b.lastAccessed ?? 0) - (a.lastAccessed ?? 0))[0] ?? null;
}

function siteOf(tab) {
  try {
    return /^https?:$/.test(new URL(tab.url).protocol) ? normalizeSite(new URL(tab.url).hostname) : null;
  } catch {
    return null;
  }
}

function renderSettings(settings, site) {
  element("enabled").checked = settings.enabled;
  const listed = site ? findSite(settings.sites, site) : null;
  element("site-toggle").hidden = !listed;
  element("add-site").hidden = !site || Boolean(listed);
  element("site-note").hidden = Boolean(site);
  element("site-note").textContent = "LowKey protects uploads on web pages; open one to switch it on there.";
  if (listed) {
    element("site-name").textContent = listed.host;
    element("site-enabled").checked = listed.enabled;
    element("site-enabled").disabled = !settings.enabled;
  }
  if (site) element("add-site-name").textContent = site;
  element("preset").value = settings.preset;
}

function renderPresets(presets, selected) {
  const names = [...new Set([...presets, selected])];
  element("preset").replaceChildren(...names.map((name) => new Option(PRESET_LABELS[name] ?? name, name)));
  element("preset").value = selected;
}

function renderResults(entries) {
  element("no-results").hidden = entries.length > 0;
  element("results").replaceChildren(...entries.map((entry) => {
    const item = document.createElement("li");
    item.className = entry.outcome;
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: entry.name, title: `${entry.name} (${entry.site})` });
    const detail = Object.assign(document.createElement("span"), { className: "detail" });
    if (entry.outcome === "protected") {
      const faces = `${entry.faces} face${entry.faces === 1 ? "" : "s"}`;
      detail.textContent = entry.seconds == null ? faces : `${faces}, ${entry.seconds.toFixed(1)} s`;
    } else {
      detail.textContent = "not protected";
      detail.title = entry.message ?? "";
    }
    item.append(name, detail);
    return item;
  }));
}

async function main() {
  const [settings, tab] = await Promise.all([loadSettings(), subjectTab()]);
  const site = tab ? siteOf(tab) : null;
  renderPresets(ENGINE_PRESETS, settings.preset);
  renderSettings(settings, site);
  onSettingsChanged((next) => renderSettings(next, site));
  renderResults(await recentResults());
  onRecentResultsChanged(renderResults);

  element("enabled").addEventListener("change", (event) => updateSettings({ enabled: event.target.checked }));
  element("site-enabled").addEventListener("change", (event) => updateSettings((current) => {
    const listed = findSite(current.sites, site);
    return { sites: current.sites.map((entry) => (entry === listed ? { ...entry, enabled: event.target.checked } : entry)) };
  }));
  element("add-site").addEventListener("click", async () => {
    // Listed first: Chrome may close the popup while it shows the permission prompt.
    await updateSettings((current) => ({ sites: [...current.sites, { host: site, enabled: true }] }));
    const granted = await chrome.permissions.request({ origins: matchPatterns(site) });
    if (!granted) await updateSettings((current) => ({ sites: current.sites.filter((entry) => entry.host !== site) }));
    await chrome.runtime.sendMessage({ type: globalThis.LowKeyBridge.Message.SITES_CHANGED });
  });
  element("preset").addEventListener("change", (event) => updateSettings({ preset: event.target.value }));
  element("open-options").addEventListener("click", (event) => {
    event.preventDefault();
    chrome.runtime.openOptionsPage();
  });

  const status = await fetchDaemonStatus();
  const { tone, text } = describeDaemonStatus(status);
  Object.assign(element("daemon-status"), { textContent: text });
  element("daemon-status").dataset.tone = tone;
  if (status?.state === "connected") renderPresets(status.presets, (await loadSettings()).preset);
}

main();
