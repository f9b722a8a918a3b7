// Page wiring: controls, connection state, mic meter, transcript and RTVI message routing.
// Optional URL overrides for development: ?ws=<websocket url>, ?offer=<offer url>.

import { VoiceSession } from "./session.js";
import { Transcript } from "./transcript.js";
import { dispatchServerMessage, onServerMessage } from "./server-messages.js";
import { initMetricsPanel } from "./metrics-panel.js";
import { initVisuals } from "./visuals.js";

const $ = (id) => document.getElementById(id);

const ui = {
  connect: $("connect"),
  transport: $("transport"),
  status: $("status"),
  statusText: $("status-text"),
  statusDetail: $("status-detail"),
  error: $("error"),
  errorText: $("error-text"),
  errorClose: $("error-close"),
  meter: $("mic-meter"),
  meterFill: $("mic-meter-fill"),
  transcript: $("transcript"),
  clear: $("clear-transcript"),
  botAudio: $("bot-audio"),
};

const STATE_LABELS = {
  disconnected: "Disconnected",
  connecting: "Connecting…",
  ready: "Ready",
  listening: "Listening",
  "bot-speaking": "Bot speaking",
};

const params = new URLSearchParams(window.location.search);
const session = new VoiceSession({
  audioElement: ui.botAudio,
  wsUrl: params.get("ws") || undefined,
  offerUrl: params.get("offer") || undefined,
});
const transcript = new Transcript(ui.transcript);
const metricsPanel = initMetricsPanel($("visuals"), { transcriptList: ui.transcript });
const visuals = initVisuals($("visuals"), { transcript }); // below the latency panel

// ---------- errors and status ----------

function showError(message) {
  ui.errorText.textContent = message;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.errorText.textContent = "";
}

ui.errorClose.addEventListener("click", clearError);

function renderState(state) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = STATE_LABELS[state] ?? state;
  const busy = state !== "disconnected";
  ui.connect.textContent = busy ? "Disconnect" : "Connect";
  ui.connect.classList.toggle("danger", busy);
  ui.connect.setAttribute("aria-pressed", String(busy));
  ui.transport.disabled = busy;
  document.body.dataset.state = state;
}

// ---------- mic meter ----------

let meterLevel = 0;
let meterAria = -1;
function renderLevel(rms) {
  // -60 dBFS .. 0 dBFS -> 0 .. 1, fast attack and slow release.
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const target = Math.min(1, Math.max(0, (db + 60) / 60));
  meterLevel = target > meterLevel ? target : meterLevel * 0.85 + target * 0.15;
  ui.meterFill.style.transform = `scaleX(${meterLevel.toFixed(3)})`;
  const pct = Math.round(meterLevel * 10) * 10;
  if (pct !== meterAria) {
    meterAria = pct;
    ui.meter.setAttribute("aria-valuenow", String(pct));
  }
}

// ---------- RTVI messages -> transcript and panels ----------

let sawUserInput = false; // `user-input` (2.2.0) supersedes the deprecated `user-transcription`
let sawBotOutput = false; // `bot-output` supersedes the deprecated `bot-tts-text`
let botTalking = false;

/** [spoken, pending] text of a bot-output message (protocol 2.x spoken_status lifecycle). */
function botOutputParts(data) {
  const text = data.text ?? "";
  switch (data.spoken_status) {
    case "completed":
      return [text || data.spoken_progress?.accumulated_text || "", ""];
    case "in-progress": // TTS with word timestamps: progress as each word is spoken
      return [data.spoken_progress?.accumulated_text ?? "", data.spoken_progress?.remaining_text ?? ""];
    case "new": // spoken text starts here (sent when the bot starts speaking it)
      return data.will_be_spoken ? ["", text] : [text, ""];
    default: // protocol 1.x: one message per spoken segment
      return [text, ""];
  }
}

function handleUserText(text, final) {
  if (final) transcript.userFinal(text);
  else transcript.userInterim(text);
}

function handleRtvi(msg) {
  const data = msg.data ?? {};
  switch (msg.type) {
    case "bot-ready":
      ui.statusDetail.textContent = `Connected via ${ui.transport.selectedOptions[0].text}; protocol ${data.version ?? "?"}`;
      transcript.note("Connected: start speaking");
      break;
    case "user-input":
      sawUserInput = true;
      handleUserText(data.text, data.final !== false);
      break;
    case "user-transcription":
      if (!sawUserInput) handleUserText(data.text, Boolean(data.final));
      break;
    case "bot-output": {
      sawBotOutput = true;
      const [spoken, pending] = botOutputParts(data);
      transcript.botSegment(data.segment_id, spoken, pending);
      break;
    }
    case "bot-tts-text":
      if (!sawBotOutput) transcript.botAppend(data.text);
      break;
    case "bot-started-speaking":
      botTalking = true;
      break;
    case "bot-stopped-speaking":
      botTalking = false;
      break;
    case "bot-interrupted":
      // Sent on every user turn start, also when the bot is silent.
      if (botTalking || transcript.botHasPending) transcript.closeBotTurn({ interrupted: true });
      botTalking = false;
      break;
    case "error":
    case "error-response":
      showError(data.error || `Server ${msg.type}`);
      break;
    case "server-message":
      dispatchServerMessage(msg);
      break;
    default:
      // bot-llm-*, bot-tts-started/stopped, metrics, user-llm-text, llm-function-call-*, ...
      break;
  }
}

// A request dictated with pauses is transcribed again whole; a reply nobody heard is taken down.
onServerMessage("user-request", (data) => transcript.userRequest(data.text, data.final !== false));
onServerMessage("reply-unheard", () => transcript.withdrawBotReply());

// The server ends a session that is idle or too long, or when it stops; say why.
onServerMessage("session-ending", (data) => {
  const why = { idle_timeout: "idle", max_duration: "time limit reached", server_shutdown: "server stopping" };
  transcript.note(`Session ending (${why[data.reason] ?? data.reason})`, "warn");
});

session.addEventListener("state", (e) => renderState(e.detail.state));
session.addEventListener("level", (e) => renderLevel(e.detail.rms));
session.addEventListener("message", (e) => handleRtvi(e.detail.msg));
session.addEventListener("error", (e) => showError(e.detail.message));
session.addEventListener("closed", (e) => {
  const { code, reason, byClient, transport } = e.detail;
  if (byClient) {
    ui.statusDetail.textContent = "Disconnected.";
    transcript.note("Disconnected");
    return;
  }
  const codePart = code ? `code ${code}` : transport === "webrtc" ? "WebRTC" : "no code";
  const text = `Server closed the connection (${codePart}${reason ? `: ${reason}` : ""})`;
  ui.statusDetail.textContent = text;
  transcript.note(text, "warn");
  if (code && code !== 1000) showError(text);
});

// ---------- controls ----------

async function connect() {
  clearError();
  sawUserInput = sawBotOutput = botTalking = false;
  const kind = ui.transport.value;
  ui.statusDetail.textContent = "";
  transcript.note(`Connecting over ${ui.transport.selectedOptions[0].text}…`);
  try {
    await session.start(kind);
  } catch (err) {
    console.error("Connect failed:", err);
    showError(err?.message || String(err));
    transcript.note("Connection failed", "warn");
  }
}

ui.connect.addEventListener("click", () => {
  if (session.state === "disconnected") connect();
  else session.stop();
});

ui.clear.addEventListener("click", () => transcript.clear());

window.addEventListener("pagehide", () => session.stop());

renderState(session.state);

// For later panels, tests and debugging from the console. `receive(msg)` feeds a decoded RTVI
// message through the same path the transports use (session.handleMessage -> page routing).
window.voiceAgent = {
  session,
  transcript,
  metricsPanel,
  visuals,
  onServerMessage,
  receive: (msg) => session.handleMessage(msg),
};
