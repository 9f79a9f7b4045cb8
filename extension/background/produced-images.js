// The images LowKey itself produced, by SHA-256, so that a protected photo uploaded again (saved,
// re-shared, re-dispatched) is never protected twice. Kept in chrome.storage.session.

const STORAGE_KEY = "producedImages";
const MAX_ENTRIES = 512;
let pendingWrite = Promise.resolve();

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function storedDigests() {
  const { [STORAGE_KEY]: digests } = await chrome.storage.session.get(STORAGE_KEY);
  return Array.isArray(digests) ? digests : [];
}

export async function isProducedImage(bytes) {
  const digest = await sha256Hex(bytes);
  await pendingWrite;
  return (await storedDigests()).includes(digest);
}

export async function rememberProducedImage(bytes) {
  const digest = await sha256Hex(bytes);
  pendingWrite = pendingWrite.then(async () => {
    const digests = (await storedDigests()).filter((known) => known !== digest);
    await chrome.storage.session.set({ [STORAGE_KEY]: [digest, ...digests].slice(0, MAX_ENTRIES) });
  }).catch((error) => console.warn("LowKey: could not remember a protected image", error));
  return pendingWrite;
}
