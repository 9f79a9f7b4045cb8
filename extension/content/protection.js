// Hands the files of one upload to the service worker, shows progress, and applies the failure
// policy. Content script (classic): defines protectSelection and needsProtection for
// interception.js, and keeps the files LowKey produced so they are never protected twice.
// What a file is comes from its first bytes (shared/formats.js), never from its type or name: an
// image goes to the daemon, or is stopped with a message naming its format; a file that neither is
// an image nor says it is one (a PDF, a text file) passes untouched.
/* global LowKeyBridge, LowKeyFormats, UploadIndicator */
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

/**
 * Does this file have to be looked at before the page may see it? Every file does (its bytes, read
 * asynchronously, decide whether it is an image), except those LowKey produced.
 */
function needsProtection(file) {
  return protectionOn && file instanceof File && !producedFiles.has(file);
}

/**
 * What to do with one file: {} (not an image: pass untouched), {stop: message}, or {format,
 * output, name, type}: protect it as `format` (formats.js), the page getting a file `name` of
 * `type` in the `output` format. accept: the file input's accept attribute ("" = anything).
 */
async function planFor(file, accept) {
  const format = await LowKeyFormats.sniffFile(file);
  if (!format) {
    if (!LowKeyFormats.claimsImage(file)) return {};
    return { stop: `${file.name} says it is an image${file.type ? ` (${file.type})` : ""}, but its bytes are not an image format LowKey knows.` };
  }
  if (format.handling === LowKeyFormats.Handling.STOPPED) {
    const protectable = LowKeyFormats.FORMATS.filter((known) => known.output).map((known) => known.name).join(", ");
    return { stop: `${format.name} images cannot be protected (LowKey protects ${protectable}).` };
  }
  const output = LowKeyFormats.BY_NAME[format.output];
  const type = output.mimes.includes((file.type || "").toLowerCase()) ? file.type : output.mimes[0];
  const name = LowKeyFormats.filenameFor(file.name, output.name);
  if (!LowKeyFormats.accepts(accept, name, type)) {
    const why = format === output ? `${file.name} is a ${format.name} by its bytes`
      : `a ${format.name} comes back as ${output.name}, since its 256 colours cannot hold the protection`;
    return { stop: `This site takes only ${accept}; ${why}.` };
  }
  return { format, output, name, type };
}

/**
 * Protect the images among `files` (others pass untouched). Resolves to the files the page gets,
 * in the same order, or null when the upload is blocked (the indicator says why).
 * accept: the accept attribute of the file input they came from, "" when none.
 */
async function protectSelection(files, accept = "") {
  const candidates = files.map((file, index) => ({ file, index })).filter(({ file }) => needsProtection(file));
  const plans = await Promise.all(candidates.map(async (entry) => ({ ...entry, ...await planFor(entry.file, accept) })));
  const chosen = plans.filter((plan) => plan.format || plan.stop);
  if (!chosen.length) return files;
  const toProtect = chosen.filter((plan) => plan.format);
  const progress = toProtect.length ? indicator.track(toProtect.length) : { progress() {}, finish() {} };
  let outcome;
  try {
    outcome = await askWorker(toProtect, progress);   // an empty batch still answers the failure policy
  } finally {
    progress.finish();
  }
  const { answers, failurePolicy } = outcome;
  for (const plan of chosen) {
    if (plan.stop) answers.set(plan.index, { outcome: LowKeyBridge.Outcome.FAILED, message: plan.stop });
    const answer = answers.get(plan.index);
    if (answer?.outcome === LowKeyBridge.Outcome.PROTECTED && !plan.output.mimes.includes(answer.mime)) {
      answers.set(plan.index, { outcome: LowKeyBridge.Outcome.FAILED,
        message: `The daemon returned ${answer.mime} for a ${plan.format.name}; LowKey expected ${plan.output.name}: update LowKey.` });
    }
  }
  const failures = chosen.filter(({ index }) => answers.get(index)?.outcome !== LowKeyBridge.Outcome.PROTECTED
    && answers.get(index)?.outcome !== LowKeyBridge.Outcome.UNCHANGED);
  const result = files.slice();
  for (const plan of chosen) {
    const { file, index } = plan;
    const answer = answers.get(index);
    if (answer?.outcome === LowKeyBridge.Outcome.PROTECTED) result[index] = protectedCopy(file, answer, plan);
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

/** The protected File: named and typed for its bytes' format (plan from planFor). */
function protectedCopy(original, answer, { name, type }) {
  return new File([LowKeyBridge.base64ToBytes(answer.data)], name, { type, lastModified: original.lastModified });
}

/** Send the chosen files to the worker; resolves to {answers: Map(index -> answer), failurePolicy}. */
async function askWorker(chosen, progress) {
  const requests = await Promise.all(chosen.map(async ({ file, index, format }) => ({
    id: index, name: file.name, type: format.mimes[0],
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
