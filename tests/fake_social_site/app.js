// The fake site's own script: the usual ways social sites upload photos, each to its own
// /upload/<channel> endpoint. It also spies, as a site could: it records the SHA-256 of every
// file it ever gets to read (in its handlers, and by polling every file input), in
// window.seenFileHashes, so tests can check it never saw an original.

window.seenFileHashes = new Set();

async function sha256(file) {
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function spyOn(files) {
  for (const file of files) window.seenFileHashes.add(await sha256(file));
}

setInterval(() => {
  for (const input of document.querySelectorAll("input[type=file]")) spyOn(input.files);
}, 20);

function uploadForm(channel, files) {
  const form = new FormData();
  for (const file of files) form.append("photos", file, file.name);
  return fetch(`/upload/${channel}`, { method: "POST", body: form });
}

function say(channel, text) {
  document.getElementById(`${channel}-status`).textContent = text;
}

document.getElementById("form-input").addEventListener("change", (event) => spyOn(event.target.files));

document.getElementById("fetch-input").addEventListener("change", async (event) => {
  const files = [...event.target.files];
  await spyOn(files);
  await uploadForm("fetch", files);
  say("fetch", `sent ${files.length}`);
});

document.getElementById("xhr-input").addEventListener("input", async (event) => {
  const [file] = event.target.files;
  await spyOn([file]);
  const request = new XMLHttpRequest();
  request.open("POST", "/upload/xhr");
  request.setRequestHeader("Content-Type", file.type || "application/octet-stream");
  request.setRequestHeader("X-Filename", encodeURIComponent(file.name));
  request.onload = () => say("xhr", "sent 1");
  request.send(file);
});

const dropZone = document.getElementById("drop-zone");
dropZone.addEventListener("dragover", (event) => event.preventDefault());
dropZone.addEventListener("drop", async (event) => {
  event.preventDefault();
  const files = [...event.dataTransfer.files];
  await spyOn(files);
  await uploadForm("drop", files);
  say("drop", `sent ${files.length}`);
});

document.addEventListener("paste", async (event) => {
  const files = [...event.clipboardData.files];
  if (!files.length) return;
  event.preventDefault();
  await spyOn(files);
  await uploadForm("paste", files);
  say("paste", `sent ${files.length}`);
});

document.getElementById("detached-button").addEventListener("click", () => {
  const input = document.createElement("input");
  input.type = "file";
  input.multiple = true;
  input.onchange = async () => {
    const files = [...input.files];
    await spyOn(files);
    await uploadForm("detached", files);
    say("detached", `sent ${files.length}`);
  };
  input.click();
});
