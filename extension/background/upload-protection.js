// The worker's side of a content script's batch: each file either passes unchanged (protection
// off for the site, or LowKey made the file), or goes to the daemon; progress and answers go back
// over the batch's port, and the page's failure policy comes last.

import "../shared/bridge.js";
import { recordResult } from "../shared/recent-results.js";
import { loadSettings, protectionActive } from "../shared/settings.js";
import { isProducedImage, rememberProducedImage } from "./produced-images.js";

const { Message, Outcome, base64ToBytes, bytesToBase64 } = globalThis.LowKeyBridge;

/** Share of a photo's progress bar at the start of each daemon stage ("attack" fills the rest). */
const STAGE_START = { queued: 0, decode: 0.03, detect: 0.06, attack: 0.1, encode: 0.97 };
const ATTACK_SHARE = STAGE_START.encode - STAGE_START.attack;

export function jobFraction(stage, done, total) {
  if (stage === "attack" && total > 0) return STAGE_START.attack + ATTACK_SHARE * (done / total);
  return STAGE_START[stage] ?? 0;
}

/** Serve one content-script port: it sends one PROTECT message, then waits for the answers. */
export function serveProtectPort(port, client) {
  const jobs = new Set();
  let open = true;
  const post = (message) => {
    if (open) port.postMessage(message);
  };
  port.onDisconnect.addListener(() => {
    open = false;
    for (const id of jobs) client.cancel(id);
  });
  port.onMessage.addListener(async (message) => {
    if (message?.type !== Message.PROTECT || !Array.isArray(message.files)) return;
    const settings = await loadSettings();
    const site = hostnameOf(port.sender?.url);
    const active = protectionActive(settings, site);
    await Promise.all(message.files.map((file) => answerFile(file, { active, settings, site, client, jobs, post })));
    post({ type: Message.BATCH_DONE, failurePolicy: settings.failurePolicy });
  });
}

async function answerFile(file, { active, settings, site, client, jobs, post }) {
  const answer = (fields) => post({ ...fields, type: Message.FILE_DONE, id: file.id });
  if (!active) return answer({ outcome: Outcome.UNCHANGED, reason: "off" });
  const bytes = base64ToBytes(file.data);
  if (await isProducedImage(bytes)) return answer({ outcome: Outcome.UNCHANGED, reason: "already-protected" });

  const job = client.protect({
    data: bytes, filename: file.name, mime: file.type, preset: settings.preset,
    onProgress: (stage, done, total) => post({ type: Message.PROGRESS, id: file.id, fraction: jobFraction(stage, done, total) }),
  });
  jobs.add(job.id);
  try {
    const { header, payload } = await job.result;
    await rememberProducedImage(payload);
    const seconds = header.stats?.seconds ?? null;
    recordResult({ name: file.name, site, outcome: Outcome.PROTECTED, faces: header.faces, seconds });
    answer({ outcome: Outcome.PROTECTED, data: bytesToBase64(payload), mime: header.mime || file.type,
             faces: header.faces, seconds });
  } catch (error) {
    const message = describeFailure(error, file.name);
    recordResult({ name: file.name, site, outcome: Outcome.FAILED, message });
    answer({ outcome: Outcome.FAILED, code: error.code ?? "internal", message });
  } finally {
    jobs.delete(job.id);
  }
}

/** The sentence the page shows for a photo LowKey could not protect. */
function describeFailure(error, filename) {
  const daemonSaid = ["bad_request", "bad_image", "too_large", "busy", "cancelled", "internal"];
  if (daemonSaid.includes(error.code)) return `The LowKey daemon could not protect ${filename}: ${error.message}`;
  return error.message || String(error);
}

function hostnameOf(url) {
  try {
    return new URL(url).hostname;
  } catch {
    return "";
  }
}
