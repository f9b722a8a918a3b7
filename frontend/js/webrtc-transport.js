// WebRTC transport for pipecat's SmallWebRTC server route (what @pipecat-ai/small-webrtc-transport does):
//   POST /api/offer {sdp, type} -> {sdp, type, pc_id}   (ICE gathered up front, no trickle)
//   audio: mic track out and bot track in on the first (audio) transceiver
//   data channel: RTVI messages as JSON strings, plus "ping: <time>" keep-alives every second,
//   which the server uses to tell that the peer is still there.

const SIGNALLING_TYPE = "signalling";

export function defaultOfferUrl(loc = window.location) {
  return new URL("api/offer", loc.href).href;
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Whatever was gathered by then is good enough (host candidates come first).
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class WebRTCTransport {
  /**
   * handlers: onMessage(obj), onTrack(MediaStream), onClose({code, reason, byClient})
   */
  constructor({ offerUrl = defaultOfferUrl(), iceServers = [], connectTimeoutMs = 20000, ...handlers } = {}) {
    this.offerUrl = offerUrl;
    this.iceServers = iceServers;
    this.connectTimeoutMs = connectTimeoutMs;
    this.handlers = handlers;
    this.pc = null;
    this.dc = null;
    this.pcId = null;
    this.pingTimer = null;
    this.closedByClient = false;
    this.closeReported = false;
    this.abortConnect = null;
  }

  get name() {
    return "WebRTC";
  }

  get sendsMicAudio() {
    return false;
  }

  async connect(micStream) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    // Transceiver 0 must be audio: the server maps transceivers by creation order.
    const track = micStream?.getAudioTracks()[0];
    if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [micStream] });
    else pc.addTransceiver("audio", { direction: "recvonly" });

    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      this.handlers.onTrack?.(stream);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.reportClose(null, "WebRTC connection failed");
      else if (pc.connectionState === "closed") this.reportClose(null, "WebRTC connection closed");
    };

    const dc = pc.createDataChannel("rtvi", { ordered: true });
    this.dc = dc;
    const opened = new Promise((resolve, reject) => {
      dc.onopen = () => resolve();
      dc.onerror = (ev) => reject(new Error(`Data channel error: ${ev.error?.message || "unknown"}`));
      this.abortConnect = () => reject(new Error("connection closed while connecting"));
    });
    opened.catch(() => {}); // handled below; avoid an unhandled rejection before we await it
    dc.onmessage = (ev) => this.onChannelMessage(ev.data);
    dc.onclose = () => this.reportClose(null, "data channel closed");

    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, 3000);

    const res = await fetch(this.offerUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    if (!res.ok) {
      const body = await res.text().catch(() => "");
      throw new Error(`POST ${new URL(this.offerUrl).pathname} failed: HTTP ${res.status} ${body.slice(0, 200)}`);
    }
    const answer = await res.json();
    this.pcId = answer.pc_id ?? null;
    if (this.closedByClient) throw new Error("connection cancelled");
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("WebRTC connection timed out")), this.connectTimeoutMs);
    });
    try {
      await Promise.race([opened, timeout]);
    } finally {
      clearTimeout(timer);
      this.abortConnect = null;
    }
    this.sendPing();
    this.pingTimer = setInterval(() => this.sendPing(), 1000);
  }

  sendPing() {
    if (this.dc?.readyState === "open") this.dc.send(`ping: ${Date.now()}`);
  }

  onChannelMessage(data) {
    if (typeof data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.debug("Non-JSON data channel message:", data);
      return;
    }
    if (msg?.type === SIGNALLING_TYPE) {
      // Server-side signalling: peerLeft ends the session; renegotiation is only needed for video.
      const kind = msg.message?.type;
      if (kind === "peerLeft") this.close({ byServer: true, reason: "server left the call" });
      else console.debug("Ignoring signalling message", msg.message);
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
    if (this.dc?.readyState === "open") this.dc.send(JSON.stringify(obj));
  }

  sendAudio() {
    /* audio travels as a media track */
  }

  async close({ byServer = false, reason = "client disconnect" } = {}) {
    if (!byServer) this.closedByClient = true;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.abortConnect?.();
    try {
      this.dc?.close();
    } catch {
      /* ignore */
    }
    try {
      this.pc?.getSenders().forEach((s) => s.track?.stop());
      this.pc?.close();
    } catch {
      /* ignore */
    }
    this.reportClose(null, reason);
  }
}
