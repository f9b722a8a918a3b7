// Minimal codec for pipecat's `Frame` protobuf (pipecat/frames/frames.proto).
//
//   message Frame { oneof frame {
//     TextFrame text = 1;            // {id=1, name=2, text=3}
//     AudioRawFrame audio = 2;       // {id=1, name=2, audio=3, sample_rate=4, num_channels=5, pts=6}
//     TranscriptionFrame transcription = 3;  // {id, name, text=3, user_id=4, timestamp=5}
//     MessageFrame message = 4;      // {data=1: JSON string}
//     InterruptionFrame interruption = 5;    // {id, name}
//   } }
//
// Only varint (wire type 0) and length-delimited (wire type 2) fields occur; 64/32-bit
// fixed fields are skipped for robustness. 64-bit varints become (possibly lossy) Numbers.

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const FRAME_KINDS = { 1: "text", 2: "audio", 3: "transcription", 4: "message", 5: "interruption" };

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// ---------- encoding ----------

function varintSize(value) {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

class Writer {
  constructor(size) {
    this.buf = new Uint8Array(size);
    this.pos = 0;
  }
  varint(value) {
    while (value >= 0x80) {
      this.buf[this.pos++] = (value % 128) | 0x80;
      value = Math.floor(value / 128);
    }
    this.buf[this.pos++] = value;
  }
  tag(field, wire) {
    this.varint((field << 3) | wire);
  }
  bytes(field, data) {
    this.tag(field, WIRE_LEN);
    this.varint(data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
  }
  uint(field, value) {
    this.tag(field, WIRE_VARINT);
    this.varint(value);
  }
}

function wrapInFrame(kindField, inner) {
  const w = new Writer(1 + varintSize(inner.length) + inner.length);
  w.bytes(kindField, inner);
  return w.buf;
}

/** Encode an audio frame: s16le PCM bytes (Uint8Array or Int16Array). */
export function encodeAudioFrame(pcm, sampleRate, numChannels = 1) {
  const bytes = pcm instanceof Uint8Array ? pcm : new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  const size = 1 + varintSize(bytes.length) + bytes.length + 1 + varintSize(sampleRate) + 1 + varintSize(numChannels);
  const w = new Writer(size);
  w.bytes(3, bytes);
  w.uint(4, sampleRate);
  w.uint(5, numChannels);
  return wrapInFrame(2, w.buf);
}

/** Encode a message frame carrying a JSON-serialisable object. */
export function encodeMessageFrame(obj) {
  const data = textEncoder.encode(typeof obj === "string" ? obj : JSON.stringify(obj));
  const w = new Writer(1 + varintSize(data.length) + data.length);
  w.bytes(1, data);
  return wrapInFrame(4, w.buf);
}

// ---------- decoding ----------

class Reader {
  constructor(bytes) {
    this.buf = bytes;
    this.pos = 0;
  }
  get done() {
    return this.pos >= this.buf.length;
  }
  varint() {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error("protobuf: truncated varint");
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new Error("protobuf: varint too long");
  }
  lengthDelimited() {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.buf.length) throw new Error("protobuf: truncated field");
    const out = this.buf.subarray(this.pos, end);
    this.pos = end;
    return out;
  }
  skip(wire) {
    switch (wire) {
      case WIRE_VARINT: this.varint(); break;
      case WIRE_FIXED64: this.pos += 8; break;
      case WIRE_LEN: this.lengthDelimited(); break;
      case WIRE_FIXED32: this.pos += 4; break;
      default: throw new Error(`protobuf: unsupported wire type ${wire}`);
    }
  }
  /** Iterate over (field, wire) pairs, calling fn; fn returns true if it consumed the value. */
  fields(fn) {
    while (!this.done) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      if (!fn(field, wire)) this.skip(wire);
    }
  }
}

// field number -> [name, type] for each inner message
const SCHEMAS = {
  text: { 1: ["id", "uint"], 2: ["name", "string"], 3: ["text", "string"] },
  audio: {
    1: ["id", "uint"], 2: ["name", "string"], 3: ["audio", "bytes"],
    4: ["sample_rate", "uint"], 5: ["num_channels", "uint"], 6: ["pts", "uint"],
  },
  transcription: {
    1: ["id", "uint"], 2: ["name", "string"], 3: ["text", "string"],
    4: ["user_id", "string"], 5: ["timestamp", "string"],
  },
  message: { 1: ["data", "string"] },
  interruption: { 1: ["id", "uint"], 2: ["name", "string"] },
};

function decodeInner(kind, bytes) {
  const schema = SCHEMAS[kind];
  const out = {};
  const r = new Reader(bytes);
  r.fields((field, wire) => {
    const spec = schema[field];
    if (!spec) return false;
    const [name, type] = spec;
    if (type === "uint" && wire === WIRE_VARINT) out[name] = r.varint();
    else if (type === "string" && wire === WIRE_LEN) out[name] = textDecoder.decode(r.lengthDelimited());
    else if (type === "bytes" && wire === WIRE_LEN) out[name] = r.lengthDelimited().slice(); // own, aligned copy
    else return false;
    return true;
  });
  return out;
}

/**
 * Decode a serialized `pipecat.Frame`.
 * Returns {kind, ...fields}; kind is one of text/audio/transcription/message/interruption,
 * or "unknown". For audio, `audio` is a Uint8Array of s16le PCM (missing fields get
 * protobuf defaults: 0). For message, `data` is the raw JSON string.
 */
export function decodeFrame(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const r = new Reader(bytes);
  let result = { kind: "unknown" };
  r.fields((field, wire) => {
    const kind = FRAME_KINDS[field];
    if (!kind || wire !== WIRE_LEN) return false;
    result = { kind, ...decodeInner(kind, r.lengthDelimited()) };
    return true;
  });
  if (result.kind === "audio") {
    result.audio ??= new Uint8Array(0);
    result.sample_rate ??= 0;
    result.num_channels ??= 0;
  } else if (result.kind === "message") {
    result.data ??= "";
  }
  return result;
}
