// The options page: pairing (token, port, connection test), the sites, and the failure policy.

import "../shared/bridge.js";
import { describeDaemonStatus, fetchDaemonStatus } from "../shared/daemon-status.js";
import { DEFAULT_SETTINGS, loadSettings, onSettingsChanged, updateSettings } from "../shared/settings.js";
import { isDefaultSite, matchPatterns, normalizeSite } from "../shared/sites.js";

const element = (id) => document.getElementById(id);
const { Message } = globalThis.LowKeyBridge;

function showStatus(node, { tone, text }) {
  node.textContent = text;
  node.dataset.tone = tone;
  node.hidden = false;
}

async function sitesChanged() {
  await chrome.runtime.sendMessage({ type: Message.SITES_CHANGED });
}

// ------------------------------------------------------------------ pairing

async function testConnection(event) {
  event.preventDefault();
  showStatus(element("connection-status"), { tone: "", text: "Connecting…" });
  await updateSettings({ token: element("token").value.trim(), port: Number(element("port").value) });
  showStatus(element("connection-status"), describeDaemonStatus(await fetchDaemonStatus({ reconnect: true })));
}

// ------------------------------------------------------------------ sites

async function renderSites(sites) {
  const rows = await Promise.all(sites.map(async (site) => {
    const granted = await chrome.permissions.contains({ origins: matchPatterns(site.host) });
    const row = document.createElement("li");
    row.dataset.host = site.host;
    const label = document.createElement("label");
    const toggle = Object.assign(document.createElement("input"), { type: "checkbox", checked: site.enabled });
    toggle.addEventListener("change", () => setSiteEnabled(site.host, toggle.checked));
    label.append(toggle, site.host);
    row.append(label);
    if (!granted) {
      const grant = Object.assign(document.createElement("button"), { type: "button", className: "warning", textContent: "allow access" });
      grant.title = "LowKey has no access to this site yet: it cannot protect uploads there.";
      grant.addEventListener("click", () => grantSite(site.host));
      row.append(grant);
    }
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "✕", title: `Remove ${site.host}` });
    remove.setAttribute("aria-label", `Remove ${site.host}`);
    remove.addEventListener("click", () => removeSite(site.host));
    row.append(remove);
    return row;
  }));
  element("site-list").replaceChildren(...rows);
}

function setSiteEnabled(host, enabled) {
  return updateSettings((current) => ({
    sites: current.sites.map((site) => (site.host === host ? { ...site, enabled } : site)),
  }));
}

async function grantSite(host) {
  if (await chrome.permissions.request({ origins: matchPatterns(host) })) await sitesChanged();
  renderSites((await loadSettings()).sites);
}

async function addSite(event) {
  event.preventDefault();
  element("site-error").hidden = true;
  let host;
  try {
    host = normalizeSite(element("new-site").value);
  } catch (error) {
    showStatus(element("site-error"), { tone: "error", text: error.message });
    return;
  }
  // Ask first, while the click still counts as the person's gesture.
  const granted = await chrome.permissions.request({ origins: matchPatterns(host) });
  if (!granted) {
    showStatus(element("site-error"), { tone: "error", text: `LowKey needs access to ${host} to protect uploads there.` });
    return;
  }
  await updateSettings((current) => ({
    sites: current.sites.some((site) => site.host === host)
      ? current.sites.map((site) => (site.host === host ? { ...site, enabled: true } : site))
      : [...current.sites, { host, enabled: true }],
  }));
  element("new-site").value = "";
  await sitesChanged();
}

async function removeSite(host) {
  await updateSettings((current) => ({ sites: current.sites.filter((site) => site.host !== host) }));
  // The defaults' access is part of the install; other sites' access goes with them.
  if (!isDefaultSite(host)) await chrome.permissions.remove({ origins: matchPatterns(host) });
  await sitesChanged();
}

async function restoreDefaultSites() {
  await updateSettings((current) => ({
    sites: [...DEFAULT_SETTINGS.sites.map((site) => current.sites.find((known) => known.host === site.host) ?? { ...site }),
            ...current.sites.filter((site) => !isDefaultSite(site.host))],
  }));
  await sitesChanged();
}

// ------------------------------------------------------------------ policy and wiring

function render(settings) {
  if (document.activeElement !== element("token")) element("token").value = settings.token;
  if (document.activeElement !== element("port")) element("port").value = settings.port;
  for (const radio of document.querySelectorAll("input[name=failure-policy]")) radio.checked = radio.value === settings.failurePolicy;
  renderSites(settings.sites);
}

async function main() {
  render(await loadSettings());
  onSettingsChanged(render);
  element("pairing-form").addEventListener("submit", testConnection);
  element("add-site-form").addEventListener("submit", addSite);
  element("restore-sites").addEventListener("click", restoreDefaultSites);
  for (const radio of document.querySelectorAll("input[name=failure-policy]")) {
    radio.addEventListener("change", () => updateSettings({ failurePolicy: radio.value }));
  }
  const settings = await loadSettings();
  if (settings.token) showStatus(element("connection-status"), describeDaemonStatus(await fetchDaemonStatus()));
}

main();
