// Per-turn latency waterfall, cost and usage, session totals and a trend of recent turns.
//
// Fed by the server's `turn-metrics` server-message (see bot/records.py for the shapes):
//   {type: "turn-metrics", turn: TurnRecord, session: {turns, cost_total, cost_per_minute,
//    conversation_seconds, latency_p50, latency_p95}}
// Rendered with DOM and CSS only. The panel is one <section> at the top of the #visuals aside,
// so later panels can add their own sections below it.

import { onServerMessage } from "./server-messages.js";

/** Milestones in order (bot/records.py MILESTONES); a stage is named by the milestone ending it. */
export const STAGES = [
  ["vad_stop", "End of speech → VAD stop"],
  ["turn_end", "Turn detection"],
  ["llm_first_token", "LLM first token"],
  ["tools_done", "Tools"],
  ["tts_first_audio", "Speech synthesis"],
  ["bot_audio_sent", "Audio out"],
  ["answer_audio_sent", "Answer audio"],
];
const STAGE_LABELS = Object.fromEntries(STAGES);
const STAGE_ORDER = STAGES.map(([key]) => key);
const COST_COMPONENTS = [
  ["llm", "LLM"],
  ["stt", "STT"],
  ["tts", "TTS"],
  ["transport", "Transport"],
];
const HISTORY_SIZE = 10;

// ---------- helpers ----------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const ms = (secs) => Math.round(secs * 1000);
const fmtMs = (secs) => (isNum(secs) ? `${ms(secs).toLocaleString("en-US")} ms` : "—");
const fmtUsd = (usd) => `$${(isNum(usd) ? usd : 0).toFixed(6)}`;
const fmtInt = (n) => (isNum(n) ? Math.round(n).toLocaleString("en-US") : "0");
const fmtSecs = (s, digits = 2) => (isNum(s) ? `${s.toFixed(digits)} s` : "—");

function fmtDuration(secs) {
  if (!isNum(secs)) return "—";
  if (secs < 60) return `${secs.toFixed(0)} s`;
  const m = Math.floor(secs / 60);
  return `${m} min ${String(Math.round(secs - m * 60)).padStart(2, "0")} s`;
}

const isEmbedded = (provider) => typeof provider === "string" && provider.startsWith("embedded");

/** "embedded:moonshine-base-en" -> "moonshine-base-en" (embedded), "openai:gpt-4o" kept. */
function providerName(provider) {
  if (!provider) return "";
  return isEmbedded(provider) ? provider.replace(/^embedded:/, "") : provider;
}

/** Cost text: "free (embedded)" when zero and every provider involved is embedded. */
function costText(usd, providers) {
  const list = providers.filter(Boolean);
  if ((!isNum(usd) || usd === 0) && list.length > 0 && list.every(isEmbedded)) return "free (embedded)";
  return fmtUsd(usd);
}

/** Round axis step giving about `target` ticks over 0..maxMs. */
function niceStep(maxMs, target = 4) {
  const raw = Math.max(maxMs, 1) / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * pow) return m * pow;
  return 10 * pow;
}

/** Ordered stages [{key, label, start, duration}] with start = sum of the previous stages. */
export function stageRows(latency) {
  const stages = latency?.stages ?? {};
  const keys = Object.keys(stages);
  const ordered = [
    ...STAGE_ORDER.filter((k) => keys.includes(k)),
    ...keys.filter((k) => !STAGE_ORDER.includes(k)),
  ];
  let start = 0;
  const rows = [];
  for (const key of ordered) {
    const duration = Math.max(0, Number(stages[key]) || 0);
    rows.push({ key, label: STAGE_LABELS[key] ?? key.replace(/_/g, " "), start, duration });
    start += duration;
  }
  return rows;
}

const normalise = (text) => (text ?? "").toLowerCase().replace(/[^a-z0-9]+/g, "");

// ---------- panel ----------

export class MetricsPanel {
  /**
   * container: the #visuals aside (the panel is prepended to it).
   * transcriptList: the #transcript <ol>, for the latency badge on bot entries (optional).
   */
  constructor(container, { transcriptList = null } = {}) {
    this.transcriptList = transcriptList;
    this.history = []; // [{index, total, status}] of the current session, oldest first
    this.sessionId = null;
    this.last = null;

    this.root = el("section", "viz-section metrics-panel");
    this.root.id = "metrics-panel";
    this.root.setAttribute("aria-labelledby", "metrics-heading");

    const head = el("div", "viz-head");
    const heading = el("h2", null, "Latency & cost");
    heading.id = "metrics-heading";
    this.turnLabel = el("span", "viz-sub");
    head.append(heading, this.turnLabel);

    this.empty = el("p", "metrics-empty", "Latency and cost appear here after the first turn.");
    this.body = el("div", "metrics-body");
    this.body.hidden = true;

    this.root.append(head, this.empty, this.body);
    container.prepend(this.root);
  }

  /** Handler for the `turn-metrics` server message. */
  update(data) {
    const turn = data?.turn;
    if (!turn || typeof turn !== "object") return;
    const session = data.session ?? {};
    if (turn.session_id && turn.session_id !== this.sessionId) {
      this.sessionId = turn.session_id;
      this.history = [];
    }
    const total = isNum(turn.latency?.total) ? turn.latency.total : null;
    const idx = this.history.findIndex((h) => h.index === turn.index);
    const entry = { index: turn.index, total, status: turn.status };
    if (idx >= 0) this.history[idx] = entry;
    else this.history.push(entry);
    this.history = this.history.slice(-HISTORY_SIZE);
    this.last = data;

    // TurnRecord.index counts from 1 (bot/observers/turn_recorder.py).
    const turnNo = isNum(turn.index) ? turn.index : this.history.length;
    this.turnLabel.textContent = `Turn ${turnNo}${turn.status && turn.status !== "completed" ? ` · ${turn.status}` : ""}`;
    this.body.replaceChildren(
      this.renderLatency(turn, turnNo),
      this.renderCost(turn),
      this.renderSession(session),
      this.renderTrend(session),
    );
    this.empty.hidden = true;
    this.body.hidden = false;
    this.badgeTranscript(turn, total);
  }

  // ---------- latency waterfall ----------

  renderLatency(turn, turnNo) {
    const latency = turn.latency;
    const rows = stageRows(latency);
    const total = isNum(latency?.total) ? latency.total : null;
    const box = el("div", "latency-block");

    const headline = el("div", "latency-total");
    const value = el("span", "latency-total-value");
    value.id = "latency-total";
    if (total !== null) {
      value.append(document.createTextNode(ms(total).toLocaleString("en-US")), el("span", "unit", " ms"));
    } else {
      value.textContent = "—";
    }
    const caption = el("span", "latency-total-label", "voice-to-voice");
    headline.append(value, caption);
    // Words spoken before the tools' results (an acknowledgement) are not the answer.
    const answer = isNum(latency?.answer) ? latency.answer : null;
    if (answer !== null && total !== null && ms(answer) > ms(total)) {
      const answered = el("span", "latency-note", `answer audio at ${fmtMs(answer)}`);
      answered.id = "latency-answer";
      headline.append(answered);
    }
    if (total === null) {
      const why =
        turn.status === "interrupted"
          ? "Interrupted before the bot's audio went out."
          : turn.status === "failed"
            ? "The turn failed before any bot audio."
            : "No bot audio was sent in this turn.";
      headline.append(el("span", "latency-note", rows.length ? `Incomplete: ${why}` : why));
    }
    box.append(headline);
    if (!rows.length) return box;

    // Shared axis: 0 .. total (or the last reached milestone when the turn has no total).
    const end = rows[rows.length - 1].start + rows[rows.length - 1].duration;
    const axisMax = Math.max(total ?? end, end, 1e-6);
    const pct = (secs) => `${Math.min(100, (secs / axisMax) * 100).toFixed(3)}%`;
    const step = niceStep(ms(axisMax));
    const ticks = [];
    for (let t = 0; t <= ms(axisMax) + 1e-9; t += step) ticks.push(t);

    const table = el("table", "waterfall");
    const cap = el(
      "caption",
      "sr-only",
      `Latency by stage for turn ${turnNo}: total ${fmtMs(total)} from the end of the user's speech to the first bot audio.`,
    );
    const colgroup = el("colgroup");
    colgroup.append(el("col", "col-stage"), el("col", "col-track"), el("col", "col-ms"));
    const thead = el("thead", "sr-only");
    const hr = el("tr");
    for (const name of ["Stage", "Timeline", "Duration"]) {
      const th = el("th", null, name);
      th.scope = "col";
      hr.append(th);
    }
    thead.append(hr);

    const tbody = el("tbody");
    for (const row of rows) {
      const tr = el("tr", "wf-row");
      tr.dataset.stage = row.key;
      const th = el("th", "wf-label");
      th.scope = "row";
      const swatch = el("span", "wf-swatch");
      swatch.setAttribute("aria-hidden", "true");
      th.append(swatch, el("span", "wf-name", row.label));

      const track = el("td", "wf-track");
      const lane = el("div", "wf-lane");
      const grid = el("div", "wf-grid");
      grid.setAttribute("aria-hidden", "true");
      for (const t of ticks.slice(1)) {
        const line = el("span", "wf-gridline");
        line.style.left = pct(t / 1000);
        grid.append(line);
      }
      const bar = el("div", "wf-bar");
      bar.style.left = pct(row.start);
      bar.style.width = pct(row.duration);
      bar.title = `${row.label}: ${fmtMs(row.duration)} (from ${fmtMs(row.start)} to ${fmtMs(row.start + row.duration)})`;
      lane.append(grid, bar);
      track.append(lane, el("span", "sr-only", `from ${fmtMs(row.start)} to ${fmtMs(row.start + row.duration)}`));

      const dur = el("td", "wf-ms", fmtMs(row.duration));
      tr.append(th, track, dur);
      tbody.append(tr);
    }

    const tfoot = el("tfoot");
    tfoot.setAttribute("aria-hidden", "true");
    const fr = el("tr", "wf-axis-row");
    const axis = el("td", "wf-axis");
    for (const t of ticks) {
      const at = t / 1000 / axisMax;
      if (t > 0 && at > 0.93 && ticks.length > 2) continue; // would crowd the previous label
      const tick = el("span", "wf-tick", t === 0 ? "0" : t.toLocaleString("en-US"));
      tick.style.left = pct(t / 1000);
      if (at > 0.85) tick.classList.add("end");
      else if (t > 0) tick.classList.add("mid");
      axis.append(tick);
    }
    fr.append(el("td"), axis, el("td", "wf-axis-unit", "ms"));
    tfoot.append(fr);

    table.append(cap, colgroup, thead, tbody, tfoot);
    box.append(table);

    const tools = (turn.tool_calls ?? []).filter((t) => t && t.name);
    if (tools.length) {
      const list = el("p", "tool-list");
      list.append(el("span", "k", "Tools: "));
      list.append(
        tools
          .map((t) => `${t.name}${isNum(t.duration_secs) ? ` ${fmtMs(t.duration_secs)}` : ""}${t.error ? " (error)" : ""}`)
          .join(", "),
      );
      box.append(list);
    }
    return box;
  }

  // ---------- cost and usage ----------

  renderCost(turn) {
    const providers = turn.providers ?? {};
    const components = turn.cost?.components ?? {};
    const box = el("div", "metrics-group cost-block");
    box.append(el("h3", null, "This turn"));

    const total = el("div", "cost-total");
    const totalValue = el("span", "cost-total-value", costText(turn.cost?.total, Object.values(providers)));
    totalValue.id = "turn-cost";
    total.append(totalValue, el("span", "cost-total-label", "turn cost"));
    box.append(total);

    const costs = el("dl", "kv cost-components");
    for (const [key, label] of COST_COMPONENTS) {
      if (!(key in components) && !(key in providers)) continue;
      const provider = providers[key];
      const dt = el("dt", null, label);
      if (provider) dt.append(el("span", "provider", providerName(provider)));
      const text = costText(components[key], provider ? [provider] : []);
      const dd = el("dd", text.startsWith("free") ? "free" : null, text);
      const row = el("div", "kv-row");
      row.dataset.component = key;
      row.append(dt, dd);
      costs.append(row);
    }
    box.append(costs);

    const u = turn.usage ?? {};
    const cpu = u.cpu_seconds ?? {};
    const cpuTotal = Object.values(cpu).reduce((a, b) => a + (Number(b) || 0), 0);
    const usage = el("dl", "tiles usage");
    const tile = (label, value, detail) => {
      const t = el("div", "tile");
      t.append(el("dt", null, label), el("dd", null, value));
      if (detail) t.append(el("dd", "tile-detail", detail));
      usage.append(t);
    };
    tile(
      "Tokens in / out",
      `${fmtInt(u.llm_prompt_tokens)} / ${fmtInt(u.llm_completion_tokens)}`,
      u.llm_cached_tokens ? `${fmtInt(u.llm_cached_tokens)} cached` : null,
    );
    tile("TTS characters", fmtInt(u.tts_characters));
    tile("STT audio", fmtSecs(u.stt_audio_seconds, 1));
    tile(
      "CPU time",
      fmtSecs(cpuTotal),
      Object.keys(cpu).length
        ? Object.entries(cpu)
            .map(([k, v]) => `${k.toUpperCase()} ${(Number(v) || 0).toFixed(2)}`)
            .join(" · ")
        : null,
    );
    box.append(usage);
    return box;
  }

  // ---------- session ----------

  renderSession(session) {
    const providers = Object.values(this.last?.turn?.providers ?? {});
    const box = el("div", "metrics-group session-block");
    box.append(el("h3", null, "Session"));
    const tiles = el("dl", "tiles session-tiles");
    const tile = (key, label, value, detail) => {
      const t = el("div", "tile");
      t.dataset.key = key;
      t.append(el("dt", null, label), el("dd", null, value));
      if (detail) t.append(el("dd", "tile-detail", detail));
      tiles.append(t);
    };
    // "free (embedded)" is too wide for a tile: "free" with "embedded" under it.
    const money = (usd) => {
      const text = costText(usd, providers);
      return text.startsWith("free") ? ["free", "embedded"] : [text, null];
    };
    tile("turns", "Turns", fmtInt(session.turns));
    tile("cost", "Cost", ...money(session.cost_total));
    tile("cost_per_minute", "Cost / min", ...money(session.cost_per_minute));
    tile("duration", "Talk time", fmtDuration(session.conversation_seconds));
    tile("p50", "Latency p50", fmtMs(session.latency_p50));
    tile("p95", "Latency p95", fmtMs(session.latency_p95));
    box.append(tiles);
    return box;
  }

  // ---------- trend ----------

  renderTrend(session) {
    const box = el("div", "metrics-group trend-block");
    const head = el("h3", null, `Last ${this.history.length} turn${this.history.length === 1 ? "" : "s"}`);
    head.id = "trend-heading";
    box.append(head);
    const totals = this.history.map((h) => h.total).filter(isNum);
    const max = Math.max(...totals, isNum(session.latency_p95) ? session.latency_p95 : 0, 1e-6);

    const wrap = el("div", "spark-wrap");
    const list = el("ol", "spark");
    list.setAttribute("aria-labelledby", "trend-heading");
    this.history.forEach((h, i) => {
      const li = el("li", "spark-item");
      const n = isNum(h.index) ? h.index : i + 1;
      const text = isNum(h.total) ? `Turn ${n}: ${fmtMs(h.total)}` : `Turn ${n}: no latency (${h.status ?? "no audio"})`;
      li.setAttribute("aria-label", text);
      li.title = text;
      if (i === this.history.length - 1) li.classList.add("latest");
      const bar = el("span", isNum(h.total) ? "spark-bar" : "spark-bar none");
      bar.setAttribute("aria-hidden", "true");
      if (isNum(h.total)) bar.style.height = `${Math.max(4, (h.total / max) * 100).toFixed(1)}%`;
      li.append(bar);
      list.append(li);
    });
    wrap.append(list);
    if (isNum(session.latency_p50) && totals.length > 1) {
      const line = el("span", "spark-p50");
      line.setAttribute("aria-hidden", "true");
      line.style.bottom = `${((session.latency_p50 / max) * 100).toFixed(1)}%`;
      line.append(el("span", null, `p50 ${fmtMs(session.latency_p50)}`));
      wrap.append(line);
    }
    box.append(wrap);
    return box;
  }

  // ---------- transcript badge ----------

  /** Put the turn's total latency on the bot transcript entry whose text matches bot_text. */
  badgeTranscript(turn, total) {
    if (!this.transcriptList || total === null) return;
    const want = normalise(turn.bot_text);
    if (!want) return;
    const entries = [...this.transcriptList.querySelectorAll("li.turn.bot")].reverse();
    // An entry tagged with this turn's id (visuals.js tags the entries it links charts from).
    const tagged = turn.turn_id ? entries.find((li) => li.dataset.turnId === turn.turn_id) : null;
    const match = tagged ?? entries.find((li) => {
      const have = normalise(li.querySelector(".text")?.textContent);
      if (!have) return false;
      const n = Math.min(have.length, want.length, 40);
      return n >= Math.min(8, want.length) && have.slice(0, n) === want.slice(0, n);
    });
    if (!match) return;
    const who = match.querySelector(".who");
    if (!who) return;
    let badge = who.querySelector(".latency-badge");
    if (!badge) {
      badge = el("span", "latency-badge");
      who.append(badge);
    }
    badge.textContent = fmtMs(total);
    badge.title = "Voice-to-voice latency";
    badge.setAttribute("aria-label", `voice-to-voice latency ${fmtMs(total)}`);
  }
}

/** Create the panel in `container` and subscribe it to `turn-metrics`. */
export function initMetricsPanel(container, options = {}) {
  const panel = new MetricsPanel(container, options);
  onServerMessage("turn-metrics", (data) => panel.update(data));
  return panel;
}
