// Runs in the page's own JavaScript world (MAIN), before the page's scripts. Files that reach a
// page through the File System Access API (showOpenFilePicker, showDirectoryPicker, a drop read
// with DataTransferItem.getAsFileSystemHandle, a handle kept in IndexedDB) are read with one
// method, FileSystemFileHandle.prototype.getFile. This wraps it: the page's call resolves to what
// LowKey's content script answers (file-system-access.js), the protected copy, or rejects when
// the failure policy blocks the photo. The page keeps its real handles (instanceof, isSameEntry,
// IndexedDB all work); it never holds the original File, because only the content script reads it.
// Also: on the drop LowKey re-dispatched with the protected copies, getAsFileSystemHandle answers
// with the real handle the person dropped (its getFile goes through LowKey as above).
(() => {
  // Must equal the names in file-system-access.js (the two worlds share no code).
  const FILE_REQUEST = "lowkey:file-of-handle";        // MAIN -> content: {id, handle}
  const HANDLE_REQUEST = "lowkey:handle-of-drop-file";  // MAIN -> content: {id, file}
  const ANSWER = "lowkey:file-system-answer";          // content -> MAIN: {id, file | handle | error, name}

  if (typeof FileSystemFileHandle !== "function") return;   // a browser without the API
  // The browser's own functions, taken before any page script can replace them.
  const getFile = FileSystemFileHandle.prototype.getFile;
  const getAsFile = DataTransferItem.prototype.getAsFile;
  const getAsHandle = DataTransferItem.prototype.getAsFileSystemHandle;
  const kindOf = Object.getOwnPropertyDescriptor(DataTransferItem.prototype, "kind").get;

  const waiting = new Map();
  let lastId = 0;

  // Content scripts answer on document; detail crosses the worlds as a structured clone.
  document.addEventListener(ANSWER, (event) => {
    const settle = waiting.get(event.detail?.id);
    if (!settle) return;
    waiting.delete(event.detail.id);
    event.stopImmediatePropagation();
    settle(event.detail);
  }, true);

  /** Ask the content script; rejects at once (fail closed) when no content script heard it. */
  function ask(type, fields) {
    return new Promise((resolve, reject) => {
      const id = `${Date.now()}-${++lastId}`;
      waiting.set(id, resolve);
      const heard = !document.dispatchEvent(new CustomEvent(type, { detail: { id, ...fields }, cancelable: true }));
      if (!heard) {
        waiting.delete(id);
        reject(new DOMException("LowKey could not check this file: reload the page.", "NotAllowedError"));
      }
    });
  }

  function replace(prototype, name, method) {
    Object.defineProperty(prototype, name, { ...Object.getOwnPropertyDescriptor(prototype, name), value: method });
  }

  replace(FileSystemFileHandle.prototype, "getFile", {
    async getFile() {
      await getFile.call(this);   // the browser's own errors: not a handle, no permission, file gone
      const answer = await ask(FILE_REQUEST, { handle: this });
      if (!answer.file) throw new DOMException(answer.error, answer.name || "NotAllowedError");
      return answer.file;
    },
  }.getFile);

  if (typeof getAsHandle !== "function") return;
  replace(DataTransferItem.prototype, "getAsFileSystemHandle", {
    getAsFileSystemHandle() {
      const native = getAsHandle.call(this);
      // Read now: an item is only readable while its event is dispatched.
      const file = kindOf.call(this) === "file" ? getAsFile.call(this) : null;
      return native.then(async (handle) => handle ?? (file && (await ask(HANDLE_REQUEST, { file })).handle) ?? null);
    },
  }.getAsFileSystemHandle);
})();
