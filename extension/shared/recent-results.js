// The last photos the extension protected (or could not), for the popup. Kept in
// chrome.storage.session: gone when the browser closes, and out of reach of content scripts.

const STORAGE_KEY = "recentResults";
const MAX_ENTRIES = 8;
let pendingWrite = Promise.resolve();

/** Add an entry {name, site, outcome, faces?, seconds?, message?, at} (newest first). */
export function recordResult(entry) {
  pendingWrite = pendingWrite.then(async () => {
    const entries = await recentResults();
    await chrome.storage.session.set({ [STORAGE_KEY]: [{ at: Date.now(), ...entry }, ...entries].slice(0, MAX_ENTRIES) });
  }).catch((error) => console.warn("LowKey: could not record a result", error));
  return pendingWrite;
}

export async function recentResults() {
  const { [STORAGE_KEY]: entries } = await chrome.storage.session.get(STORAGE_KEY);
  return Array.isArray(entries) ? entries : [];
}

export function onRecentResultsChanged(callback) {
  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === "session" && changes[STORAGE_KEY]) callback(changes[STORAGE_KEY].newValue ?? []);
  });
}
