// Hands the files of one upload to the service worker, shows progress, and applies the failure
// policy. Content script (classic): defines protectSelection and needsProtection for
// interception.js, and keeps the files LowKey produced so they are never protected twice.
/* global LowKeyBridge, UploadIndicator */
/* exported needsProtection, protectSelection */

const indicator = new UploadIndicator();
/** Files LowKey handed to the page (protected copies, originals the person chose to send). */
const producedFiles = new WeakSet();
/** Whether protection is on for this frame's site; on until the worker says otherwise (fail closed). */
let protectionOn = true;

function refreshProtectionState() {
  chrome.runtime.sendMessage({ type: LowKeyBridge.Message.SITE_STATE })
    .then((answer) => { protectionOn = answer?.active !== false; })
    .catch(() => {});   // the extension was reloaded: this script is orphaned, keep failing closed
}
refreshProtectionState();
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === "local") refreshProtectionState();
});

/** Does this file have to go through the daemon before the page may see it? */
function needsProtection(file) {
  return protectionOn && file instanceof File && !producedFiles.has(file)
    && LowKeyBridge.protectableType(file) !== null;
}

/**
 * Protect the images among `files` (others pass untouched). Resolves to the files the page gets,
 * in the same order, or null when the upload is blocked (the indicator says why).
 */
async function protectSelection(files) {
  const chosen = files.map((file, index) => ({ file, index })).filter(({ file }) => needsProtection(file));
  if (!chosen.length) return files;
  const progress = indicator.track(chosen.length);
  let outcome;
  try {
    outcome = await askWorker(chosen, progress);
  } finally {
    progress.finish();
  }
  const { answers, failurePolicy } = outcome;
  const failures = chosen.filter(({ index }) => answers.get(index)?.outcome !== LowKeyBridge.Outcome.PROTECTED
    && answers.get(index)?.outcome !== LowKeyBridge.Outcome.UNCHANGED);
  const result = files.slice();
  for (const { file, index } of chosen) {
    const answer = answers.get(index);
    if (answer?.outcome === LowKeyBridge.Outcome.PROTECTED) result[index] = protectedCopy(file, answer);
    if (answer?.outcome === LowKeyBridge.Outcome.PROTECTED || answer?.reason === "already-protected") {
      producedFiles.add(result[index]);
    }
  }
  if (failures.length) {
    const reason = answers.get(failures[0].index)?.message ?? "LowKey could not protect this photo.";
    const photos = failures.length === 1 ? "1 photo" : `${failures.length} photos`;
    if (failurePolicy !== "ask") {
      indicator.blocked(`Upload blocked — ${photos} could not be protected. ${reason}`);
      return null;
    }
    if (!await indicator.ask(`${photos} could not be protected. ${reason} Send the original anyway?`)) {
      indicator.blocked("Upload cancelled: nothing was sent.");
      return null;
    }
    for (const { index } of failures) producedFiles.add(result[index]);
    return result;
  }
  indicator.done(summarize(chosen.map(({ index }) => answers.get(index))));
  return result;
}

function summarize(answers) {
  const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
  const isProtected = answers.filter((answer) => answer.outcome === LowKeyBridge.Outcome.PROTECTED);
  const faces = isProtected.reduce((sum, answer) => sum + (answer.faces ?? 0), 0);
  if (!isProtected.length) {
    return answers.every((answer) => answer.reason === "already-protected")
      ? "Already protected by LowKey: sent as it is." : "LowKey is off here: photos sent as they are.";
  }
  if (!faces) return `${plural(isProtected.length, "photo")} ready — no faces found, metadata removed.`;
  return `${plural(isProtected.length, "photo")} protected — ${plural(faces, "face")}.`;
}

function protectedCopy(original, answer) {
  return new File([LowKeyBridge.base64ToBytes(answer.data)], original.name,
    { type: answer.mime || original.type, lastModified: original.lastModified });
}

/** Send the chosen files to the worker; resolves to {answers: Map(index -> answer), failurePolicy}. */
async function askWorker(chosen, progress) {
  const requests = await Promise.all(chosen.map(async ({ file, index }) => ({
    id: index, name: file.name, type: LowKeyBridge.protectableType(file),
    data: LowKeyBridge.bytesToBase64(new Uint8Array(await file.arrayBuffer())),
  })));
  const position = new Map(chosen.map(({ index }, order) => [index, order]));
  const answers = new Map();
  return new Promise((resolve) => {
    const giveUp = (message) => {
      for (const { index } of chosen) {
        if (!answers.has(index)) answers.set(index, { outcome: LowKeyBridge.Outcome.FAILED, message });
      }
      resolve({ answers, failurePolicy: "block" });
    };
    let port;
    try {
      port = chrome.runtime.connect({ name: LowKeyBridge.PROTECT_PORT });
    } catch {
      giveUp("LowKey was updated or switched off: reload the page and try again.");
      return;
    }
    port.onMessage.addListener((message) => {
      if (message.type === LowKeyBridge.Message.PROGRESS) {
        progress.progress(position.get(message.id), message.fraction);
      } else if (message.type === LowKeyBridge.Message.FILE_DONE) {
        answers.set(message.id, message);
        progress.progress(position.get(message.id), 1);
      } else if (message.type === LowKeyBridge.Message.BATCH_DONE) {
        port.disconnect();
        resolve({ answers, failurePolicy: message.failurePolicy });
      }
    });
    port.onDisconnect.addListener(() => giveUp("LowKey stopped while protecting this photo: try again."));
    port.postMessage({ type: LowKeyBridge.Message.PROTECT, files: requests });
  });
}
