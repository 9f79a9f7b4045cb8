// The content script's side of page-file-system.js: the page asks for the file behind a
// FileSystemFileHandle and gets the protected copy (or a rejection the failure policy chose), and
// on a drop LowKey re-dispatched it asks for the handle the person dropped. Each original is
// protected once: a page that reads a handle again gets the same copy, and the copy a drop made
// answers that drop's handle. Content script (classic): defines fileSystemHandlesOf and
// rememberDrop for interception.js.
/* global needsProtection, protectSelection */
/* exported fileSystemHandlesOf, rememberDrop */

// Must equal the names in page-file-system.js (the two worlds share no code).
const FILE_REQUEST = "lowkey:file-of-handle";
const HANDLE_REQUEST = "lowkey:handle-of-drop-file";
const FILE_SYSTEM_ANSWER = "lowkey:file-system-answer";
/** How many originals (and dropped copies) are remembered, most recent first out last. */
const REMEMBERED_FILES = 64;

/** fileKey(original) -> Promise<File>: what the page gets for it (the protected copy). */
const copiesOfOriginals = new Map();
/** fileKey(copy LowKey dropped) -> Promise<FileSystemHandle | null> of the original dropped. */
const handlesOfDroppedCopies = new Map();

/** Identifies a file across the two worlds (a File crosses them as a structured clone). */
function fileKey(file) {
  return JSON.stringify([file.name, file.size, file.type, file.lastModified]);
}

function remember(map, key, value) {
  map.delete(key);
  map.set(key, value);
  while (map.size > REMEMBERED_FILES) map.delete(map.keys().next().value);
}

/** The handles of a drop's files, in the order of its `files`; called while the drop is dispatched. */
function fileSystemHandlesOf(transfer) {
  const items = [...transfer.items].filter((item) => item.kind === "file");
  if (typeof DataTransferItem.prototype.getAsFileSystemHandle !== "function" || items.length !== transfer.files.length) {
    return [];
  }
  return items.map((item) => item.getAsFileSystemHandle().catch(() => null));
}

/** A drop was delivered as `copies` (same order as `originals`): its handles now stand for them. */
function rememberDrop(originals, copies, handles) {
  originals.forEach((original, index) => {
    if (copies[index] !== original) remember(copiesOfOriginals, fileKey(original), Promise.resolve(copies[index]));
    if (handles[index]) remember(handlesOfDroppedCopies, fileKey(copies[index]), handles[index]);
  });
}

/** A file of the page's own origin-private file system (not one the person chose). */
async function isOriginPrivate(handle) {
  try {
    return (await (await navigator.storage.getDirectory()).resolve(handle)) !== null;
  } catch {
    return false;   // no origin-private file system here: the handle is the person's
  }
}

/** What the page gets for `handle`: its file protected, the original where LowKey passes it, or a rejection. */
async function fileForPage(handle) {
  const original = await handle.getFile();   // this world's getFile: the browser's own
  if (!needsProtection(original) || await isOriginPrivate(handle)) return original;
  const key = fileKey(original);
  if (!copiesOfOriginals.has(key)) {
    const copy = protectSelection([original]).then((result) => {
      if (!result) throw new DOMException("LowKey blocked this photo: it could not be protected.", "NotAllowedError");
      return result[0];
    });
    copy.catch(() => {
      if (copiesOfOriginals.get(key) === copy) copiesOfOriginals.delete(key);   // a failure is not remembered
    });
    remember(copiesOfOriginals, key, copy);
  }
  return copiesOfOriginals.get(key);
}

function answerPage(id, fields) {
  document.dispatchEvent(new CustomEvent(FILE_SYSTEM_ANSWER, { detail: { id, ...fields } }));
}

document.addEventListener(FILE_REQUEST, (event) => {
  const { id, handle } = event.detail ?? {};
  if (!(handle instanceof FileSystemFileHandle)) return;
  event.preventDefault();   // tells the page's world a content script heard it
  fileForPage(handle).then((file) => answerPage(id, { file }),
    (error) => answerPage(id, { error: error.message || String(error), name: error.name }));
}, true);

document.addEventListener(HANDLE_REQUEST, (event) => {
  const { id, file } = event.detail ?? {};
  if (!(file instanceof File)) return;
  event.preventDefault();
  Promise.resolve(handlesOfDroppedCopies.get(fileKey(file)) ?? null).then((handle) => answerPage(id, { handle }));
}, true);
