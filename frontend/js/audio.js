// Microphone capture (16 kHz mono s16 in 20 ms chunks) and bot-audio playback (s16 PCM,
// 24 kHz by default) with an immediate flush, both built on AudioWorklets.

const CAPTURE_WORKLET = new URL("./worklets/capture-processor.js", import.meta.url);
const PLAYBACK_WORKLET = new URL("./worklets/playback-processor.js", import.meta.url);

export const MIC_CONSTRAINTS = {
  audio: {
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
    channelCount: 1,
  },
};

/** Ask for the microphone. Throws a readable Error if it is unavailable or denied. */
export async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("Microphone access needs a secure context (https or localhost).");
  }
  try {
    return await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
  } catch (err) {
    const name = err?.name || "Error";
    throw new Error(`Microphone unavailable (${name}): ${err?.message || err}`);
  }
}

/**
 * Runs a MediaStream through the capture worklet.
 * onChunk(Int16Array) gets 20 ms of 16 kHz mono PCM; onLevel(rms 0..1) gets the chunk level.
 */
export class MicCapture {
  constructor(stream, { targetRate = 16000, chunkMs = 20, onChunk = null, onLevel = null } = {}) {
    this.stream = stream;
    this.targetRate = targetRate;
    this.chunkSamples = Math.round((targetRate * chunkMs) / 1000);
    this.onChunk = onChunk;
    this.onLevel = onLevel;
    this.ctx = null;
    this.node = null;
    this.source = null;
    this.sink = null;
  }

  async start() {
    // Preferred: a context at the target rate, so the browser does the resampling.
    // Fallback (browsers that refuse to mix rates): native rate + the worklet's resampler.
    try {
      this.ctx = new AudioContext({ sampleRate: this.targetRate, latencyHint: "interactive" });
      this.source = this.ctx.createMediaStreamSource(this.stream);
    } catch (err) {
      console.warn("16 kHz capture context unavailable, resampling in the worklet:", err);
      await this.ctx?.close().catch(() => {});
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      this.source = this.ctx.createMediaStreamSource(this.stream);
    }
    await this.ctx.audioWorklet.addModule(CAPTURE_WORKLET);
    this.node = new AudioWorkletNode(this.ctx, "capture-processor", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { targetRate: this.targetRate, chunkSamples: this.chunkSamples },
    });
    this.node.port.onmessage = (e) => {
      const msg = e.data;
      if (msg.type !== "chunk") return;
      this.onLevel?.(msg.rms);
      this.onChunk?.(new Int16Array(msg.pcm));
    };
    // A silent sink keeps the graph pulled in every browser.
    this.sink = this.ctx.createGain();
    this.sink.gain.value = 0;
    this.source.connect(this.node);
    this.node.connect(this.sink);
    this.sink.connect(this.ctx.destination);
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  async stop() {
    this.onChunk = null;
    this.onLevel = null;
    try {
      this.source?.disconnect();
      this.node?.disconnect();
      if (this.node) this.node.port.onmessage = null;
      this.sink?.disconnect();
    } catch {
      /* already disconnected */
    }
    if (this.ctx && this.ctx.state !== "closed") await this.ctx.close().catch(() => {});
    this.ctx = this.node = this.source = this.sink = null;
  }
}

/** Linear-interpolation resampler for the rare case the bot's rate differs from the player's. */
function resampleLinear(input, fromRate, toRate) {
  if (fromRate === toRate || !fromRate) return input;
  const outLen = Math.max(1, Math.round((input.length * toRate) / fromRate));
  const out = new Float32Array(outLen);
  const step = fromRate / toRate;
  for (let i = 0; i < outLen; i++) {
    const pos = i * step;
    const j = Math.floor(pos);
    const a = input[Math.min(j, input.length - 1)];
    const b = input[Math.min(j + 1, input.length - 1)];
    out[i] = a + (b - a) * (pos - j);
  }
  return out;
}

/**
 * Plays s16le PCM chunks as they arrive. flush() drops every queued sample immediately.
 * onStarted/onDrained fire when audible output starts or the queue empties.
 */
export class PcmPlayer {
  constructor({ sampleRate = 24000, prerollMs = 60, onStarted = null, onDrained = null } = {}) {
    this.sampleRate = sampleRate;
    this.prerollMs = prerollMs;
    this.onStarted = onStarted;
    this.onDrained = onDrained;
    this.ctx = null;
    this.node = null;
  }

  async start() {
    this.ctx = new AudioContext({ sampleRate: this.sampleRate, latencyHint: "interactive" });
    await this.ctx.audioWorklet.addModule(PLAYBACK_WORKLET);
    this.node = new AudioWorkletNode(this.ctx, "playback-processor", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { prerollMs: this.prerollMs },
    });
    this.node.port.onmessage = (e) => {
      if (e.data.type === "started") this.onStarted?.();
      else if (e.data.type === "drained") this.onDrained?.(e.data.flushed);
    };
    this.node.connect(this.ctx.destination);
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  /** Queue PCM: bytes is a Uint8Array of s16le samples (interleaved if numChannels > 1). */
  push(bytes, sampleRate = this.sampleRate, numChannels = 1) {
    if (!this.node || bytes.byteLength < 2) return;
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    const pcm = new Int16Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.byteLength / 2));
    const channels = Math.max(1, numChannels || 1);
    const frames = Math.floor(pcm.length / channels);
    let samples = new Float32Array(frames);
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += pcm[i * channels + c];
      samples[i] = sum / channels / 32768;
    }
    samples = resampleLinear(samples, sampleRate || this.ctx.sampleRate, this.ctx.sampleRate);
    this.node.port.postMessage({ type: "push", samples }, [samples.buffer]);
  }

  /** Stop at once: drop everything queued. */
  flush() {
    this.node?.port.postMessage({ type: "flush" });
  }

  async close() {
    this.onStarted = this.onDrained = null;
    try {
      this.node?.disconnect();
    } catch {
      /* ignore */
    }
    if (this.ctx && this.ctx.state !== "closed") await this.ctx.close().catch(() => {});
    this.ctx = this.node = null;
  }
}
