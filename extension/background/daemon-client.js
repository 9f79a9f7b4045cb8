// The one connection to the LowKey daemon (protocol v1 over ws://127.0.0.1:PORT/v1/ws).
//
// Connects on demand with the pairing token from the settings, retries with backoff while photos
// wait, sends every photo it is given (at most the daemon's per-connection job limit at a time),
// sends photos that were in flight again after a dropped connection, and closes the socket once
// idle so the service worker may sleep.

import { CLOSE_UNAUTHORIZED, daemonUrl, decodeFrame, encodeFrame, LOOPBACK_ADDRESS } from "../shared/protocol.js";

/** Why the client could not get a photo protected (besides the daemon's own error codes). */
export const ClientError = Object.freeze({
  UNPAIRED: "unpaired",           // no pairing token in the options
  UNAUTHORIZED: "unauthorized",   // the daemon refused the token (also the daemon's code)
  UNREACHABLE: "unreachable",     // nothing answers on the port
  DISCONNECTED: "disconnected",   // the connection kept dropping while the photo was in flight
  PROTOCOL: "protocol",           // the daemon said something this client does not understand
});

export class DaemonError extends Error {
  name = "DaemonError";

  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Waits before connection attempts 2, 3, ... while photos wait (the first is immediate). */
const RETRY_DELAYS_MS = [250, 500, 1000, 2000];
/** Close the socket after this long without a photo in flight. */
const IDLE_CLOSE_MS = 30_000;
/** How long the daemon has to answer the hello. */
const WELCOME_TIMEOUT_MS = 10_000;
/** How often one photo is sent again after its connection dropped. */
const MAX_SENDS_PER_JOB = 3;
/** A photo the daemon answered `busy` (queue full, or shutting down) goes again after this times its sends. */
const BUSY_RETRY_MS = 1000;
/** Photos in flight at once when the daemon names no limit. */
const FALLBACK_JOB_LIMIT = 4;

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

export class DaemonClient {
  #loadSettings;
  #clientName;
  #socket = null;
  #welcome = null;
  #port = null;
  #connecting = null;
  #jobs = new Map();   // id -> {header, payload, onProgress, resolve, reject, sent, sends}
  #nextJob = 1;
  #pumping = false;
  #pumpAgain = false;
  #idleTimer = null;

  /** loadSettings: async () => ({token, port}); clientName: sent in the hello. */
  constructor({ loadSettings, clientName }) {
    this.#loadSettings = loadSettings;
    this.#clientName = clientName;
  }

  /**
   * What the popup and options show: {state: "connected", device, presets, defaultPreset,
   * protocol, daemonVersion, port}, or {state: <ClientError code>, message}. Connects (one
   * attempt) when not connected; reconnect: drop the current connection first (new settings).
   */
  async status({ reconnect = false } = {}) {
    if (reconnect) this.disconnect();
    try {
      await this.#connected(0);
      const welcome = this.#welcome;
      return {
        state: "connected", port: this.#port, device: welcome.device, protocol: welcome.version,
        daemonVersion: welcome.daemon_version ?? null, presets: welcome.presets ?? [],
        defaultPreset: welcome.default_preset ?? null,
      };
    } catch (error) {
      return { state: error.code ?? ClientError.PROTOCOL, message: error.message };
    }
  }

  /**
   * Protect one photo. Resolves to the daemon's result {header, payload}; rejects with a
   * DaemonError (the daemon's code, or a ClientError code). onProgress(stage, done, total).
   */
  protect({ data, filename, mime, preset, onProgress }) {
    const id = `p${Date.now().toString(36)}-${this.#nextJob++}`;
    const promise = new Promise((resolve, reject) => {
      this.#jobs.set(id, {
        header: { type: "protect", id, filename, mime, preset }, payload: data,
        onProgress, resolve, reject, sent: false, sends: 0, notBefore: 0,
      });
    });
    this.#pump();
    return { id, result: promise };
  }

  /** Stop caring about a photo (its page has gone); the daemon is told when it has it. */
  cancel(id) {
    const job = this.#jobs.get(id);
    if (!job) return;
    this.#jobs.delete(id);
    if (job.sent) this.#send({ type: "cancel", id });
    this.#pump();
  }

  /** Close the connection (settings changed); photos in flight are sent again on a new one. */
  disconnect() {
    const socket = this.#socket;
    this.#forgetConnection();
    socket?.close(1000, "settings changed");
    if (this.#jobs.size) this.#pump();
  }

  // ---------------------------------------------------------------- sending

  async #pump() {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        const now = Date.now();
        const waiting = [...this.#jobs.entries()].filter(([, job]) => !job.sent && job.notBefore <= now);
        if (!waiting.length) break;
        try {
          await this.#connected(RETRY_DELAYS_MS.length);
        } catch (error) {
          for (const [id, job] of waiting) {
            this.#jobs.delete(id);
            job.reject(error);
          }
          continue;
        }
        if (!this.#welcome) continue;   // lost again already: #lost has asked for another round
        const { max_jobs_per_connection: limit = FALLBACK_JOB_LIMIT, max_image_bytes: maxBytes = Infinity } = this.#welcome.limits ?? {};
        let inFlight = [...this.#jobs.values()].filter((job) => job.sent).length;
        for (const [id, job] of waiting) {
          if (inFlight >= limit || !this.#jobs.has(id)) continue;
          const refusal = job.payload.length > maxBytes
            ? new DaemonError("too_large", `the photo is larger than the daemon accepts (${Math.floor(maxBytes / 2 ** 20)} MiB)`)
            : job.sends >= MAX_SENDS_PER_JOB
              ? new DaemonError(ClientError.DISCONNECTED, "The LowKey daemon closed the connection while "
                + "protecting this photo, again and again.")
              : null;
          if (refusal) {
            this.#jobs.delete(id);
            job.reject(refusal);
            continue;
          }
          job.sent = true;
          job.sends += 1;
          inFlight += 1;
          this.#send(job.header, job.payload);
        }
      } while (this.#pumpAgain);
    } finally {
      this.#pumping = false;
      this.#scheduleIdleClose();
    }
  }

  #send(header, payload) {
    this.#socket?.send(encodeFrame(header, payload));
  }

  #scheduleIdleClose() {
    clearTimeout(this.#idleTimer);
    if (this.#jobs.size || !this.#socket) return;
    this.#idleTimer = setTimeout(() => {
      if (!this.#jobs.size) this.disconnect();
    }, IDLE_CLOSE_MS);
  }

  // ---------------------------------------------------------------- connecting

  /** The open, welcomed socket; connects with up to `retries` retries (backoff) when needed. */
  #connected(retries) {
    if (this.#socket) return Promise.resolve(this.#socket);
    this.#connecting ??= this.#connectWithRetries(retries).finally(() => { this.#connecting = null; });
    return this.#connecting;
  }

  async #connectWithRetries(retries) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#open();
      } catch (error) {
        if (error.code !== ClientError.UNREACHABLE || attempt >= retries) throw error;
        await sleep(RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)]);
      }
    }
  }

  async #open() {
    const { token, port } = await this.#loadSettings();
    if (!token) {
      throw new DaemonError(ClientError.UNPAIRED, "LowKey is not paired with its daemon: run "
        + "\"lowkey-daemon pair\" and paste the token into LowKey's options.");
    }
    const socket = new WebSocket(daemonUrl(port));
    socket.binaryType = "arraybuffer";
    const welcome = await new Promise((resolve, reject) => {
      let refusal = null;
      const timer = setTimeout(() => socket.close(), WELCOME_TIMEOUT_MS);
      socket.onopen = () => socket.send(encodeFrame({ type: "hello", token, client: this.#clientName }));
      socket.onmessage = (event) => {
        let header;
        try {
          ({ header } = decodeFrame(event.data));
        } catch {
          socket.close();
          return;
        }
        if (header.type === "welcome") {
          clearTimeout(timer);
          resolve(header);
        } else if (header.type === "error") {
          refusal = header;
        }
      };
      socket.onclose = (event) => {
        clearTimeout(timer);
        if (event.code === CLOSE_UNAUTHORIZED || refusal?.code === ClientError.UNAUTHORIZED) {
          reject(new DaemonError(ClientError.UNAUTHORIZED, "The LowKey daemon refused the pairing "
            + "token: run \"lowkey-daemon pair\" and paste its token into LowKey's options again."));
        } else {
          reject(new DaemonError(ClientError.UNREACHABLE, "The LowKey daemon is not running "
            + `(nothing answers at ${LOOPBACK_ADDRESS}:${port}): start it with "lowkey-daemon serve".`));
        }
      };
    });
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = () => this.#lost(socket);
    this.#socket = socket;
    this.#welcome = welcome;
    this.#port = port;
    return socket;
  }

  #forgetConnection() {
    clearTimeout(this.#idleTimer);
    if (this.#socket) {
      this.#socket.onmessage = null;
      this.#socket.onclose = null;
    }
    this.#socket = null;
    this.#welcome = null;
    for (const job of this.#jobs.values()) job.sent = false;
  }

  /** The socket closed under us: photos in flight go again on a new connection. */
  #lost(socket) {
    if (socket !== this.#socket) return;
    this.#forgetConnection();
    if (this.#jobs.size) this.#pump();
  }

  // ---------------------------------------------------------------- receiving

  #receive(frame) {
    let message;
    try {
      message = decodeFrame(frame);
    } catch (error) {
      console.warn("LowKey: unreadable frame from the daemon", error);
      return;
    }
    const { header, payload } = message;
    const job = this.#jobs.get(header.id);
    if (!job) {
      if (header.type === "error") console.warn("LowKey: the daemon says", header.code, header.message);
      return;
    }
    if (header.type === "progress") {
      job.onProgress?.(header.stage, header.done, header.total);
      return;
    }
    if (header.type === "error" && header.code === "busy" && job.sends < MAX_SENDS_PER_JOB) {
      job.sent = false;   // a full queue, or a daemon restarting: try again a little later
      job.notBefore = Date.now() + BUSY_RETRY_MS * job.sends;
      setTimeout(() => this.#pump(), BUSY_RETRY_MS * job.sends);
      return;
    }
    this.#jobs.delete(header.id);
    if (header.type === "result") {
      job.resolve({ header, payload });
    } else if (header.type === "error") {
      job.reject(new DaemonError(header.code, header.message));
    } else {
      job.reject(new DaemonError(ClientError.PROTOCOL, `The daemon answered "${header.type}".`));
    }
    this.#pump();
  }
}
