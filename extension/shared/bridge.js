// The contract between the content scripts and the service worker: port and message names, and how
// image bytes travel (base64: runtime messaging is JSON-only). Which files are images, and of what
// format, is formats.js's job.
//
// A classic script, not a module, because content scripts cannot be modules: content scripts list it
// first in their `js`, extension pages and the worker `import "../shared/bridge.js"` for its side
// effect. Either way it defines globalThis.LowKeyBridge and nothing else.

globalThis.LowKeyBridge = Object.freeze({
  /** chrome.runtime.connect name of the port a content script opens per batch of files. */
  PROTECT_PORT: "lowkey-protect",

  /** runtime.sendMessage types (to the worker) and port message types (both ways). */
  Message: Object.freeze({
    SITE_STATE: "site-state",         // content -> worker: is protection on for this frame's site?
    DAEMON_STATUS: "daemon-status",   // popup/options -> worker: {reconnect?} -> status
    SITES_CHANGED: "sites-changed",   // options/popup -> worker: re-register the content scripts
    PROTECT: "protect",               // content -> worker (port): {files: [{id, name, type, data}]}
    PROGRESS: "progress",             // worker -> content (port): {id, fraction}
    FILE_DONE: "file-done",           // worker -> content (port): {id, outcome, ...}
    BATCH_DONE: "batch-done",         // worker -> content (port): {failurePolicy}
  }),

  /** What the worker answers for each file of a batch. */
  Outcome: Object.freeze({
    PROTECTED: "protected",   // data (base64), mime, faces, seconds: use these bytes instead
    UNCHANGED: "unchanged",   // reason: send the original (protection off, or LowKey made it)
    FAILED: "failed",         // code, message: the failure policy decides
  }),

  bytesToBase64(bytes) {
    if (bytes.toBase64) return bytes.toBase64();
    let text = "";
    for (let start = 0; start < bytes.length; start += 0x8000) {
      text += String.fromCharCode(...bytes.subarray(start, start + 0x8000));
    }
    return btoa(text);
  },

  base64ToBytes(text) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  },
});
