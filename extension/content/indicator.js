// The small in-page indicator: "Protecting 2 photos — 40 %", then what came of it. Lives in a
// closed shadow root (the page can neither read nor restyle it) and acts on trusted clicks only.
// Content script (classic): defines UploadIndicator for protection.js.
/* exported UploadIndicator */

const INDICATOR_STYLE = `
  .panel { display: flex; gap: 10px; align-items: flex-start; box-sizing: border-box;
    width: max-content; max-width: min(380px, calc(100vw - 32px)); padding: 10px 12px;
    border-radius: 10px; background: #1d2330; color: #f4f6fb; font: 13px/1.4 system-ui, sans-serif;
    box-shadow: 0 4px 18px rgba(0, 0, 0, 0.28); }
  .panel[data-state="blocked"] { background: #3a1d22; }
  .panel[data-state="ask"] { background: #3a2f1a; }
  svg { flex: none; width: 18px; height: 18px; margin-top: 1px; }
  .body { display: flex; flex-direction: column; gap: 6px; min-width: 0; }
  .message { overflow-wrap: anywhere; }
  .bar { height: 4px; width: 220px; max-width: 100%; border-radius: 2px; background: rgba(255, 255, 255, 0.18); overflow: hidden; }
  .fill { height: 100%; width: 0; background: #7cc4ff; transition: width 0.3s; }
  .actions { display: flex; gap: 8px; }
  button { font: inherit; border-radius: 6px; border: 1px solid rgba(255, 255, 255, 0.35);
    background: transparent; color: inherit; padding: 3px 10px; cursor: pointer; }
  button.primary { background: #f4f6fb; color: #1d2330; border-color: #f4f6fb; }
  button.close { border: none; padding: 0 2px; font-size: 16px; line-height: 1; opacity: 0.7; }
  [hidden] { display: none !important; }
`;

/** How long a "done" message stays before the indicator hides itself. */
const DONE_VISIBLE_MS = 8000;

class UploadIndicator {
  #host = null;
  #parts = null;
  #batches = new Set();
  #hideTimer = null;
  #pendingAnswer = null;

  /** Show progress for a batch of `count` photos; returns {progress(index, fraction), finish()}. */
  track(count) {
    const batch = { fractions: new Array(count).fill(0) };
    this.#batches.add(batch);
    this.#showProgress();
    return {
      progress: (index, fraction) => {
        batch.fractions[index] = Math.max(batch.fractions[index], fraction);
        if (this.#batches.has(batch)) this.#showProgress();
      },
      finish: () => {
        this.#batches.delete(batch);
        if (this.#batches.size) this.#showProgress();
      },
    };
  }

  /** A batch ended well: say so, then go away. */
  done(text) {
    if (this.#batches.size || this.#pendingAnswer) return;
    this.#render({ state: "done", text });
    this.#hideTimer = setTimeout(() => this.hide(), DONE_VISIBLE_MS);
  }

  /** An upload was blocked: say why until the person closes it. */
  blocked(text) {
    this.#render({ state: "blocked", text, closable: true });
  }

  /** Ask whether to send the original photos; resolves true only on a trusted click on "Send". */
  ask(text) {
    this.#pendingAnswer?.(false);
    return new Promise((resolve) => {
      this.#pendingAnswer = (answer) => {
        this.#pendingAnswer = null;
        resolve(answer);
      };
      this.#render({ state: "ask", text, actions: [
        { label: "Don't upload", action: "keep-back", primary: true, answer: false },
        { label: "Send original", action: "send-original", answer: true },
      ] });
    });
  }

  hide() {
    clearTimeout(this.#hideTimer);
    this.#pendingAnswer?.(false);
    this.#host?.remove();
  }

  #showProgress() {
    const fractions = [...this.#batches].flatMap((batch) => batch.fractions);
    const share = fractions.reduce((sum, value) => sum + value, 0) / Math.max(fractions.length, 1);
    const photos = fractions.length === 1 ? "1 photo" : `${fractions.length} photos`;
    this.#render({ state: "progress", text: `Protecting ${photos} — ${Math.floor(share * 100)} %`, fraction: share });
  }

  #render({ state, text, fraction = null, closable = false, actions = [] }) {
    clearTimeout(this.#hideTimer);
    const parts = this.#attach();
    parts.panel.dataset.state = state;
    parts.message.textContent = text;
    parts.bar.hidden = fraction === null;
    parts.fill.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
    parts.close.hidden = !closable;
    parts.actions.replaceChildren(...actions.map(({ label, action, primary, answer }) => {
      const button = document.createElement("button");
      button.textContent = label;
      button.dataset.action = action;
      button.className = primary ? "primary" : "";
      button.addEventListener("click", (event) => {
        if (!event.isTrusted) return;
        this.#pendingAnswer?.(answer);
        this.hide();
      });
      return button;
    }));
    parts.actions.hidden = actions.length === 0;
  }

  #attach() {
    if (!this.#host) {
      this.#host = document.createElement("lowkey-indicator");
      const root = this.#host.attachShadow({ mode: "closed" });
      // A literal without substitutions: the one thing set as HTML, so nothing the page controls gets in.
      root.innerHTML = `<div class="panel" role="status" aria-live="polite"><svg viewBox="0 0 24 24"
          aria-hidden="true"><path fill="#7cc4ff"
          d="M12 2 4 5v6c0 5 3.4 9.4 8 11 4.6-1.6 8-6 8-11V5l-8-3Zm0 5a3 3 0 1 1 0 6 3 3 0 0 1 0-6Zm0 13
          c-2-.8-3.7-2.3-4.6-4.2C8.6 14.6 10.2 14 12 14s3.4.6 4.6 1.8c-.9 1.9-2.6 3.4-4.6 4.2Z"/></svg>
          <div class="body"><div class="message"></div><div class="bar"><div class="fill"></div></div>
            <div class="actions"></div></div>
          <button class="close" aria-label="Close" title="Close">×</button></div>`;
      root.prepend(Object.assign(document.createElement("style"), { textContent: INDICATOR_STYLE }));
      this.#parts = Object.fromEntries(["panel", "message", "bar", "fill", "actions", "close"]
        .map((name) => [name, root.querySelector(`.${name}`)]));
      this.#parts.close.addEventListener("click", (event) => {
        if (event.isTrusted) this.hide();
      });
      for (const [property, value] of [["all", "initial"], ["position", "fixed"], ["right", "16px"],
        ["bottom", "16px"], ["z-index", "2147483647"], ["display", "block"]]) {
        this.#host.style.setProperty(property, value, "important");
      }
    }
    if (!this.#host.isConnected) (document.body ?? document.documentElement).append(this.#host);
    return this.#parts;
  }
}
