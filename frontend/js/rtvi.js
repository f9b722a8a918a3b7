// RTVI envelope helpers (pipecat.processors.frameworks.rtvi, protocol 2.2.0).

export const RTVI_LABEL = "rtvi-ai";
export const RTVI_PROTOCOL_VERSION = "2.2.0";
export const CLIENT_LIBRARY = "voice-agent-page";

let counter = 0;

export function messageId() {
  counter += 1;
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `msg-${Date.now().toString(36)}-${counter}`;
}

export function rtviMessage(type, data = {}, id = messageId()) {
  return { label: RTVI_LABEL, type, id, data };
}

export function clientReady() {
  return rtviMessage("client-ready", {
    version: RTVI_PROTOCOL_VERSION,
    about: { library: CLIENT_LIBRARY, library_version: "1.0.0", platform: navigator.userAgent },
  });
}

/** send-text: typed user input (for later use; the page itself does not need it yet). */
export function sendText(content, { runImmediately = true, audioResponse = true } = {}) {
  return rtviMessage("send-text", {
    content,
    options: { run_immediately: runImmediately, audio_response: audioResponse },
  });
}

export function isRtviMessage(msg) {
  return msg && typeof msg === "object" && msg.label === RTVI_LABEL && typeof msg.type === "string";
}
