// AudioWorklet: microphone -> mono 16-bit PCM at `targetRate`, posted in fixed-size chunks.
//
// If the AudioContext already runs at targetRate (the normal case: the page asks for a
// 16 kHz capture context and the browser resamples the mic), samples pass straight through.
// Otherwise a simple box-filter + linear-interpolation resampler is used as a fallback.
// Each chunk message also carries the RMS level of the chunk (0..1) for the level meter.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.targetRate = opts.targetRate || 16000;
    this.chunkSamples = opts.chunkSamples || Math.round(this.targetRate / 50); // 20 ms
    this.ratio = sampleRate / this.targetRate; // input samples per output sample
    this.chunk = new Int16Array(this.chunkSamples);
    this.fill = 0;
    this.sumSquares = 0;
    // resampler state (fallback path)
    this.pos = 0; // fractional read position relative to the start of the current block
    this.prev = 0; // last (filtered) input sample of the previous block
    this.boxLen = Math.max(1, Math.ceil(this.ratio));
    this.box = new Float32Array(this.boxLen);
    this.boxIdx = 0;
    this.boxSum = 0;
  }

  emit(sample) {
    const s = Math.max(-1, Math.min(1, sample));
    this.sumSquares += s * s;
    this.chunk[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.fill === this.chunkSamples) {
      const rms = Math.sqrt(this.sumSquares / this.chunkSamples);
      const pcm = this.chunk.buffer;
      this.port.postMessage({ type: "chunk", pcm, rms }, [pcm]);
      this.chunk = new Int16Array(this.chunkSamples);
      this.fill = 0;
      this.sumSquares = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true;
    const n = input[0].length;
    const channels = input.length;
    let mono = input[0];
    if (channels > 1) {
      mono = new Float32Array(n);
      for (let c = 0; c < channels; c++) {
        const ch = input[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i] / channels;
      }
    }

    if (Math.abs(this.ratio - 1) < 1e-6) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }

    // Fallback resampler: moving-average anti-alias filter, then linear interpolation.
    const filtered = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      this.boxSum += mono[i] - this.box[this.boxIdx];
      this.box[this.boxIdx] = mono[i];
      this.boxIdx = (this.boxIdx + 1) % this.boxLen;
      filtered[i] = this.boxSum / this.boxLen;
    }
    // this.pos is in [-1, n): position -1 refers to this.prev
    while (this.pos < n - 1 + 1e-9) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : filtered[i];
      const b = filtered[i + 1 < n ? i + 1 : n - 1];
      this.emit(a + (b - a) * frac);
      this.pos += this.ratio;
    }
    this.pos -= n;
    this.prev = filtered[n - 1];
    return true;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
