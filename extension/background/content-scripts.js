// Register the interception scripts on the person's sites: every listed site whose host permission
// is granted (the defaults' at install, the others when the person adds them). Scripts stay on
// sites the person switched off; they ask the worker before touching a file.

import { loadSettings } from "../shared/settings.js";
import { matchPatterns } from "../shared/sites.js";

const CONTENT_SCRIPTS = Object.freeze([
  {
    id: "lowkey-interception",
    js: ["shared/bridge.js", "shared/formats.js", "content/indicator.js", "content/protection.js",
         "content/file-system-access.js", "content/interception.js"],
  },
  { id: "lowkey-page-world", js: ["content/page-world.js", "content/page-file-system.js"], world: "MAIN" },
]);

let syncing = Promise.resolve([]);

/** Bring the registered scripts in line with the settings; resolves to the match patterns used. */
export function syncContentScripts() {
  syncing = syncing.catch(() => []).then(sync);
  return syncing;
}

async function sync() {
  const { sites } = await loadSettings();
  const matches = [];
  for (const { host } of sites) {
    const patterns = matchPatterns(host);
    if (await chrome.permissions.contains({ origins: patterns })) matches.push(...patterns);
  }
  const ids = CONTENT_SCRIPTS.map((script) => script.id);
  const registered = await chrome.scripting.getRegisteredContentScripts({ ids });
  if (registered.length) await chrome.scripting.unregisterContentScripts({ ids: registered.map((script) => script.id) });
  if (matches.length) {
    await chrome.scripting.registerContentScripts(CONTENT_SCRIPTS.map((script) => ({
      ...script, matches, runAt: "document_start", allFrames: true, persistAcrossSessions: true,
    })));
  }
  return matches;
}
