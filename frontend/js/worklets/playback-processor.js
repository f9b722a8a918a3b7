// AudioWorklet: plays queued mono Float32 sample blocks; `flush` drops everything at once.
//
// Messages in:  {type: "push", samples: Float32Array}   append audio (already at sampleRate)
//               {type: "flush"}                          drop every queued sample now
// Messages out: {type: "started"} when output starts after silence, {type: "drained"} when
//               the queue runs dry.
// A small pre-roll (prerollMs) absorbs network jitter after an underrun; a tail shorter than
// the pre-roll still plays once no new audio has arrived for `prerollMs`.

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.preroll = Math.round(((opts.prerollMs ?? 60) / 1000) * sampleRate);
    this.queue = [];
    this.offset = 0; // read offset into queue[0]
    this.queued = 0; // total queued samples
    this.playing = false;
    this.lastPushFrame = 0;
    this.port.onmessage = (e) => {
      const msg = e.data;
      if (msg.type === "push") {
        this.queue.push(msg.samples);
        this.queued += msg.samples.length;
        this.lastPushFrame = currentFrame;
      } else if (msg.type === "flush") {
        this.queue = [];
        this.offset = 0;
        this.queued = 0;
        if (this.playing) {
          this.playing = false;
          this.port.postMessage({ type: "drained", flushed: true });
        }
      }
    };
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!out) return true;
    out.fill(0);
    if (!this.playing) {
      const stale = currentFrame - this.lastPushFrame >= this.preroll;
      if (this.queued >= this.preroll || (this.queued > 0 && stale)) {
        this.playing = true;
        this.port.postMessage({ type: "started" });
      } else {
        return true;
      }
    }
    let written = 0;
    while (written < out.length && this.queue.length > 0) {
      const head = this.queue[0];
      const n = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      this.queued -= n;
      if (this.offset >= head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (this.queued === 0) {
      this.playing = false;
      this.port.postMessage({ type: "drained", flushed: false });
    }
    return true;
  }
}

registerProcessor("playback-processor", PlaybackProcessor);
