// Catches every way a page gets an image to upload, before the page's own handlers run, and hands
// the page protected copies instead: file inputs (also in open shadow roots, and inputs created in
// script and never attached, found by page-world.js), drag-and-drop, paste, and form submits made
// while protection runs (files read through File System Access handles: file-system-access.js).
// The page never sees the originals: an input is emptied at once, and a
// drop or paste event never reaches it; it gets new events carrying the protected files.
// Content script (classic), registered at document_start in every frame of the person's sites.
/* global fileSystemHandlesOf, needsProtection, protectSelection, rememberDrop */

/** Event page-world.js dispatches on document, relatedTarget = a file input that is not attached. */
const DETACHED_INPUT_EVENT = "lowkey:detached-file-input";

/** Events LowKey dispatched itself: they carry files the page may have. */
const ownEvents = new WeakSet();
/** File inputs whose selection is being protected -> Promise<boolean> (true: the page got files). */
const heldInputs = new WeakMap();
/** Forms whose submit waits for protection. */
const heldSubmits = new WeakSet();
/** Inputs with their own listeners (detached, or in a shadow root: their `change` never reaches window). */
const watchedInputs = new WeakSet();

function isFileInput(node) {
  return node instanceof HTMLInputElement && node.type === "file";
}

function swallow(event) {
  event.preventDefault();
  event.stopImmediatePropagation();
}

function dispatchOwn(target, event) {
  ownEvents.add(event);
  target.dispatchEvent(event);
}

function fileList(files) {
  const transfer = new DataTransfer();
  for (const file of files) transfer.items.add(file);
  return transfer.files;
}

// ------------------------------------------------------------------ file inputs

function onFileInputEvent(event) {
  const input = event.composedPath()[0];
  if (!isFileInput(input) || ownEvents.has(event)) return;
  if (heldInputs.has(input) && input.files.length === 0) {
    swallow(event);   // the `change` after the `input` of a selection already held
    return;
  }
  const files = [...input.files];
  if (!files.some(needsProtection)) return;
  swallow(event);
  input.files = fileList([]);   // from now on the page reads an empty selection
  watchFileInput(input);
  const delivery = protectSelection(files, input.accept).then((result) => {
    if (heldInputs.get(input) !== delivery) return false;   // a newer selection replaced this one
    heldInputs.delete(input);
    if (!result) return false;
    input.files = fileList(result);
    dispatchOwn(input, new Event("input", { bubbles: true, composed: true }));
    dispatchOwn(input, new Event("change", { bubbles: true }));
    return true;
  });
  heldInputs.set(input, delivery);
}

/** Listen on the input itself: for inputs whose events do not reach window. */
function watchFileInput(input) {
  if (watchedInputs.has(input)) return;
  watchedInputs.add(input);
  input.addEventListener("input", onFileInputEvent, true);
  input.addEventListener("change", onFileInputEvent, true);
}

// ------------------------------------------------------------------ forms

function onSubmit(event) {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const pending = [...form.elements].filter((element) => heldInputs.has(element)).map((input) => heldInputs.get(input));
  if (!pending.length) return;
  swallow(event);
  if (heldSubmits.has(form)) return;
  heldSubmits.add(form);
  const submitter = event.submitter;
  Promise.all(pending).then((delivered) => {
    heldSubmits.delete(form);
    if (!delivered.every(Boolean) || !form.isConnected) return;
    form.requestSubmit(submitter?.isConnected && submitter.form === form ? submitter : undefined);
  });
}

// ------------------------------------------------------------------ drag-and-drop and paste

/** Text the original event carried besides files (a paste of an image with its HTML, say). */
function stringItems(transfer) {
  return [...transfer.types].filter((type) => type !== "Files").map((type) => [type, transfer.getData(type)]);
}

function transferOf(files, strings) {
  const transfer = new DataTransfer();
  for (const file of files) transfer.items.add(file);
  for (const [type, value] of strings) transfer.setData(type, value);
  return transfer;
}

function onDrop(event) {
  const target = event.composedPath()[0];
  if (ownEvents.has(event) || !event.dataTransfer || isFileInput(target)) return;   // an input's own change covers it
  const files = [...event.dataTransfer.files];
  if (!files.some(needsProtection)) return;
  const handles = fileSystemHandlesOf(event.dataTransfer);   // readable only while the drop is dispatched
  swallow(event);   // also stops the browser from opening the file
  const strings = stringItems(event.dataTransfer);
  const { clientX, clientY, screenX, screenY, ctrlKey, shiftKey, altKey, metaKey } = event;
  protectSelection(files).then((result) => {
    if (!result) return;
    rememberDrop(files, result, handles);   // the page may read this drop through its handles
    const receiver = target.isConnected ? target : document.elementFromPoint(clientX, clientY) ?? document.body;
    dispatchOwn(receiver, new DragEvent("drop", {
      bubbles: true, cancelable: true, composed: true, dataTransfer: transferOf(result, strings),
      clientX, clientY, screenX, screenY, ctrlKey, shiftKey, altKey, metaKey,
    }));
  });
}

function onPaste(event) {
  const target = event.composedPath()[0];
  if (ownEvents.has(event) || !event.clipboardData) return;
  const files = [...event.clipboardData.files];
  if (!files.some(needsProtection)) return;
  swallow(event);
  const strings = stringItems(event.clipboardData);
  protectSelection(files).then((result) => {
    if (!result) return;
    const receiver = target.isConnected ? target : document.activeElement ?? document.body;
    dispatchOwn(receiver, new ClipboardEvent("paste", {
      bubbles: true, cancelable: true, composed: true, clipboardData: transferOf(result, strings),
    }));
  });
}

// ------------------------------------------------------------------ wiring (before any page script)

window.addEventListener("input", onFileInputEvent, true);
window.addEventListener("change", onFileInputEvent, true);
window.addEventListener("submit", onSubmit, true);
window.addEventListener("drop", onDrop, true);
window.addEventListener("paste", onPaste, true);
document.addEventListener(DETACHED_INPUT_EVENT, (event) => {
  if (isFileInput(event.relatedTarget)) watchFileInput(event.relatedTarget);
}, true);
