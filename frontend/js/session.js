// One voice session: microphone, transport (WebSocket or WebRTC), bot audio playback and the
// RTVI handshake. UI-agnostic: the page listens to the events it dispatches.
//
// Events (CustomEvent.detail):
//   "state"   {state}  disconnected | connecting | ready | listening | bot-speaking
//   "message" {msg}    every RTVI message from the server (after the session's own handling)
//   "level"   {rms}    microphone level, about 50 times a second
//   "closed"  {code, reason, byClient, transport}
//   "error"   {message, fatal}

import { MicCapture, PcmPlayer, openMicrophone } from "./audio.js";
import { clientReady, isRtviMessage } from "./rtvi.js";
import { WebSocketTransport, defaultWebSocketUrl } from "./ws-transport.js";
import { WebRTCTransport, defaultOfferUrl } from "./webrtc-transport.js";
import { sessionToken, withToken } from "./auth.js";

export class VoiceSession extends EventTarget {
  constructor({ audioElement = null, wsUrl, offerUrl } = {}) {
    super();
    this.audioElement = audioElement; // plays the WebRTC bot track
    this.wsUrl = wsUrl;
    this.offerUrl = offerUrl;
    this.state = "disconnected";
    this.transport = null;
    this.micStream = null;
    this.capture = null;
    this.player = null;
    this.userSpeaking = false;
    this.botSpeaking = false;
    this.botReady = false;
    this.stopping = null;
    this.generation = 0;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state });
  }

  refreshState() {
    if (!this.transport) this.setState("disconnected");
    else if (!this.botReady) this.setState("connecting");
    else if (this.userSpeaking) this.setState("listening");
    else if (this.botSpeaking) this.setState("bot-speaking");
    else this.setState("ready");
  }

  get active() {
    return this.transport !== null;
  }

  /** kind: "websocket" | "webrtc". Resolves once the transport is open and client-ready sent. */
  async start(kind = "websocket") {
    if (this.transport || this.state !== "disconnected") throw new Error("already connected");
    const generation = ++this.generation;
    const cancelled = () => generation !== this.generation; // stop() was called meanwhile
    this.botReady = this.userSpeaking = this.botSpeaking = false;
    this.setState("connecting");
    const handlers = {
      onMessage: (msg) => this.handleMessage(msg),
      onAudio: (frame) => this.player?.push(frame.audio, frame.sample_rate, frame.num_channels),
      onInterruption: () => this.stopPlayback("interruption frame"),
      onTrack: (stream) => this.playRemoteStream(stream),
      onClose: (info) => this.handleTransportClosed({ ...info, transport: kind }),
    };
    let mic = null;
    let player = null;
    let capture = null;
    let transport = null;
    try {
      // One-use: a fresh token for every connection (null when the server has no API key).
      const token = await sessionToken();
      if (cancelled()) throw new Error("cancelled");
      mic = await openMicrophone();
      if (cancelled()) throw new Error("cancelled");
      if (kind === "webrtc") {
        const offerUrl = withToken(this.offerUrl ?? defaultOfferUrl(), token);
        transport = new WebRTCTransport({ offerUrl, ...handlers });
      } else {
        const url = withToken(this.wsUrl ?? defaultWebSocketUrl(), token);
        transport = new WebSocketTransport({ url, ...handlers });
        player = new PcmPlayer({ sampleRate: 24000 });
        await player.start();
        if (cancelled()) throw new Error("cancelled");
      }
      // Capture runs for both transports: over WebSocket it feeds the socket, over WebRTC
      // (where the track itself is sent) it only drives the level meter.
      capture = new MicCapture(mic, {
        onChunk: transport.sendsMicAudio ? (pcm) => transport.sendAudio(pcm) : null,
        onLevel: (rms) => this.emit("level", { rms }),
      });
      await capture.start();
      if (cancelled()) throw new Error("cancelled");
      // From here on stop() owns (and cleans up) every resource.
      Object.assign(this, { micStream: mic, player, capture, transport });
      await transport.connect(mic);
      if (cancelled()) return;
      transport.sendMessage(clientReady());
    } catch (err) {
      const wasCancelled = cancelled();
      if (transport && this.transport === transport) {
        await this.stop();
      } else {
        await transport?.close().catch(() => {});
        await capture?.stop();
        await player?.close();
        mic?.getTracks().forEach((t) => t.stop());
        if (!wasCancelled) this.setState("disconnected");
      }
      // A Disconnect during "connecting" is not an error.
      if (!wasCancelled) throw err;
    }
  }

  playRemoteStream(stream) {
    if (!this.audioElement) return;
    this.audioElement.srcObject = stream;
    this.audioElement.play().catch((err) => console.warn("Bot audio autoplay blocked:", err));
  }

  stopPlayback(why) {
    this.player?.flush();
    console.debug("Playback flushed:", why);
  }

  handleMessage(msg) {
    if (!isRtviMessage(msg)) {
      console.debug("Non-RTVI message:", msg);
      return;
    }
    const data = msg.data || {};
    switch (msg.type) {
      case "bot-ready":
        this.botReady = true;
        break;
      case "user-started-speaking":
        this.userSpeaking = true;
        // The server interrupts the bot on every user turn start; drop queued speech now.
        this.stopPlayback("user started speaking");
        break;
      case "user-stopped-speaking":
        this.userSpeaking = false;
        break;
      case "bot-started-speaking":
        this.botSpeaking = true;
        break;
      case "bot-stopped-speaking":
        this.botSpeaking = false;
        break;
      case "bot-interrupted":
        this.botSpeaking = false;
        this.stopPlayback("bot interrupted");
        break;
      case "error":
        this.emit("error", { message: data.error || "Server error", fatal: Boolean(data.fatal) });
        break;
      case "error-response":
        this.emit("error", { message: data.error || "Request failed", fatal: false });
        break;
      default:
        break;
    }
    this.refreshState();
    this.emit("message", { msg });
    if (msg.type === "error" && data.fatal) this.stop();
  }

  handleTransportClosed(info) {
    if (!this.stopping) this.stop();
    this.emit("closed", info);
  }

  /** Close everything: transport, mic tracks, audio contexts, playback. */
  stop() {
    if (this.stopping) return this.stopping;
    this.generation += 1;
    const transport = this.transport;
    const capture = this.capture;
    const mic = this.micStream;
    const player = this.player;
    this.transport = this.capture = this.micStream = this.player = null;
    this.stopping = (async () => {
      await transport?.close().catch((err) => console.warn("transport close:", err));
      await capture?.stop();
      mic?.getTracks().forEach((t) => t.stop());
      await player?.close();
      if (this.audioElement) {
        this.audioElement.pause();
        this.audioElement.srcObject = null;
      }
      this.botReady = this.userSpeaking = this.botSpeaking = false;
      this.setState("disconnected");
      this.emit("level", { rms: 0 });
    })().finally(() => {
      this.stopping = null;
    });
    return this.stopping;
  }
}
