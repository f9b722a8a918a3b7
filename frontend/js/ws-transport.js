// WebSocket transport: every message is a binary protobuf `pipecat.Frame` (see protobuf.js).
//   client -> server: audio (16 kHz mono s16, 20 ms) and message (RTVI JSON)
//   server -> client: audio (bot speech), message (RTVI JSON), interruption

import { decodeFrame, encodeAudioFrame, encodeMessageFrame } from "./protobuf.js";

export function defaultWebSocketUrl(loc = window.location) {
  const url = new URL("ws", loc.href);
  url.protocol = loc.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export class WebSocketTransport {
  /**
   * handlers: onMessage(obj), onAudio({audio: Uint8Array, sample_rate, num_channels}),
   *           onInterruption(), onClose({code, reason, byClient})
   */
  constructor({ url = defaultWebSocketUrl(), inputSampleRate = 16000, ...handlers } = {}) {
    this.url = url;
    this.inputSampleRate = inputSampleRate;
    this.handlers = handlers;
    this.ws = null;
    this.closedByClient = false;
    this.closeReported = false;
  }

  get name() {
    return "WebSocket";
  }

  /** The page streams mic PCM over this transport (WebRTC sends a media track instead). */
  get sendsMicAudio() {
    return true;
  }

  connect() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onerror = () => {
        if (!opened) reject(new Error(`WebSocket connection to ${this.url} failed`));
      };
      ws.onclose = (ev) => {
        if (!opened) reject(new Error(`WebSocket closed before opening (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`));
        this.reportClose(ev.code, ev.reason);
      };
      ws.onmessage = (ev) => this.onWireMessage(ev.data);
    });
  }

  onWireMessage(data) {
    if (typeof data === "string") {
      // Not expected from the protobuf serializer, but accept a bare JSON message.
      this.dispatchJson(data);
      return;
    }
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      console.warn("Undecodable frame from server:", err);
      return;
    }
    switch (frame.kind) {
      case "audio":
        this.handlers.onAudio?.(frame);
        break;
      case "message":
        this.dispatchJson(frame.data);
        break;
      case "interruption":
        this.handlers.onInterruption?.();
        break;
      default:
        console.debug("Ignoring frame kind", frame.kind, frame);
    }
  }

  dispatchJson(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn("Non-JSON message from server:", text);
      return;
    }
    this.handlers.onMessage?.(msg);
  }

  reportClose(code, reason) {
    if (this.closeReported) return;
    this.closeReported = true;
    this.handlers.onClose?.({ code, reason, byClient: this.closedByClient });
  }

  sendMessage(obj) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encodeMessageFrame(obj));
  }

  sendAudio(int16) {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(encodeAudioFrame(int16, this.inputSampleRate, 1));
    }
  }

  async close() {
    this.closedByClient = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "client disconnect");
    this.reportClose(1000, "client disconnect");
  }
}
