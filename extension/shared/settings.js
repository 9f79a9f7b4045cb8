// The person's settings, in chrome.storage.local under one key. Every page and the worker read
// them through here; content scripts never do (they ask the worker).

import { DEFAULT_PORT } from "./protocol.js";
import { DEFAULT_SITES, findSite } from "./sites.js";

export const FailurePolicy = Object.freeze({
  BLOCK: "block",   // nothing is uploaded; the page says why (the default: fail closed)
  ASK: "ask",       // the page asks whether to send the original photo
});

/** Presets every daemon knows (a connected daemon's welcome lists its own, custom ones too). */
export const ENGINE_PRESETS = Object.freeze(["fast", "standard", "strong"]);

export const DEFAULT_SETTINGS = Object.freeze({
  enabled: true,
  token: "",
  port: DEFAULT_PORT,
  preset: "standard",
  failurePolicy: FailurePolicy.BLOCK,
  sites: Object.freeze(DEFAULT_SITES.map((host) => Object.freeze({ host, enabled: true }))),
});

const STORAGE_KEY = "settings";

/** Stored settings (possibly partial, possibly from an older version) completed and checked. */
export function withDefaults(stored = {}) {
  const settings = { ...DEFAULT_SETTINGS, ...stored };
  const port = Number(settings.port);
  return {
    enabled: settings.enabled !== false,
    token: String(settings.token ?? "").trim(),
    port: Number.isInteger(port) && port > 0 && port < 65536 ? port : DEFAULT_PORT,
    preset: typeof settings.preset === "string" && settings.preset ? settings.preset : DEFAULT_SETTINGS.preset,
    failurePolicy: Object.values(FailurePolicy).includes(settings.failurePolicy)
      ? settings.failurePolicy : FailurePolicy.BLOCK,
    sites: Array.isArray(settings.sites)
      ? settings.sites.filter((site) => typeof site?.host === "string")
        .map((site) => ({ host: site.host, enabled: site.enabled !== false }))
      : DEFAULT_SETTINGS.sites.map((site) => ({ ...site })),
  };
}

export async function loadSettings() {
  const { [STORAGE_KEY]: stored } = await chrome.storage.local.get(STORAGE_KEY);
  return withDefaults(stored);
}

/** Apply `change` (a partial settings object, or a function of the settings returning one). */
export async function updateSettings(change) {
  const current = await loadSettings();
  const patch = typeof change === "function" ? change(current) : change;
  const next = withDefaults({ ...current, ...patch });
  await chrome.storage.local.set({ [STORAGE_KEY]: next });
  return next;
}

/** Call `callback(settings, previous)` whenever the settings change, in any context. */
export function onSettingsChanged(callback) {
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === "local" && changes[STORAGE_KEY]) {
      callback(withDefaults(changes[STORAGE_KEY].newValue), withDefaults(changes[STORAGE_KEY].oldValue));
    }
  });
}

/** Is protection on for uploads from a page on `hostname`? */
export function protectionActive(settings, hostname) {
  return settings.enabled && findSite(settings.sites, hostname)?.enabled === true;
}
