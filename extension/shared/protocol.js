// Protocol v1 framing (daemon/PROTOCOL.md, daemon/protocol.py): every message is one binary
// WebSocket frame = 4-byte big-endian header length N, N bytes of UTF-8 JSON header, then an
// optional payload (image bytes).

export const PROTOCOL_VERSION = 1;
export const WEBSOCKET_PATH = "/v1/ws";
export const LOOPBACK_ADDRESS = "127.0.0.1";
export const DEFAULT_PORT = 47321;
/** Close code the daemon uses when the first message is not a hello with the right token. */
export const CLOSE_UNAUTHORIZED = 4401;
const HEADER_LENGTH_BYTES = 4;

/** The WebSocket URL of the daemon on `port`. */
export function daemonUrl(port) {
  return `ws://${LOOPBACK_ADDRESS}:${port}${WEBSOCKET_PATH}`;
}

/** One frame: length prefix, JSON header, payload (Uint8Array, may be empty). */
export function encodeFrame(header, payload = new Uint8Array(0)) {
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const frame = new Uint8Array(HEADER_LENGTH_BYTES + headerBytes.length + payload.length);
  new DataView(frame.buffer).setUint32(0, headerBytes.length, false);
  frame.set(headerBytes, HEADER_LENGTH_BYTES);
  frame.set(payload, HEADER_LENGTH_BYTES + headerBytes.length);
  return frame;
}

/** {header, payload} of a frame (ArrayBuffer or Uint8Array); throws ProtocolError when malformed. */
export function decodeFrame(frame) {
  const bytes = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  if (bytes.length < HEADER_LENGTH_BYTES) {
    throw new ProtocolError(`frame of ${bytes.length} bytes has no header length`);
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, false);
  const end = HEADER_LENGTH_BYTES + length;
  if (end > bytes.length) {
    throw new ProtocolError(`header length ${length} runs past the ${bytes.length}-byte frame`);
  }
  let header;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(HEADER_LENGTH_BYTES, end)));
  } catch (error) {
    throw new ProtocolError(`header is not UTF-8 JSON: ${error.message}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new ProtocolError("header is not a JSON object");
  }
  return { header, payload: bytes.subarray(end) };
}

export class ProtocolError extends Error {
  name = "ProtocolError";
}
