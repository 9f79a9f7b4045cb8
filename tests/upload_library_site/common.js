// What every page here does with the files its library hands it: post them to /upload/<channel>
// as a multipart form, and say what happened in #status (tests read it).

export async function upload(channel, files) {
  const form = new FormData();
  for (const file of files) form.append("photos", file, file.name);
  const answer = await fetch(`/upload/${channel}`, { method: "POST", body: form });
  say(`sent ${files.length} (${answer.status})`);
}

export function say(text) {
  document.getElementById("status").textContent = text;
}

export function failed(error) {
  say(`failed: ${error.name}: ${error.message}`);
}
