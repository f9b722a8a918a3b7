// Charts, sentiment and live-data panels from the server's `visualization` server-message:
//
//   {type: "visualization", turn_id, utterance_id, tool_call_id,
//    visualization: {type: "chart" | "sentiment" | "live-data", title, figure: {data, layout}, ...}}
//
// The server sends it just before the first audio of the sentence that presents it. Each one
// becomes a card in the #visuals aside (below the latency panel, newest first, at most
// MAX_CARDS) drawn with Plotly, and a titled link on the bot transcript entry of its turn.
// `{type: "visualization-withdrawn", turn_id, tool_call_ids}` takes down the cards of those
// tool calls: their reply began as the user went on with the request, unheard.
// Plotly (served locally from the Python package at /vendor/plotly.min.js) is loaded lazily,
// with a <script> tag, when the first visualization arrives.
//
// Optional fields used when present: sentiment {label, compound} (or label and compound /
// average_compound at the top level), live-data metric, as_of (ISO or Unix seconds) and source,
// summary (a caption under the chart).

import { onServerMessage } from "./server-messages.js";

export const PLOTLY_SRC = new URL("../vendor/plotly.min.js", import.meta.url).href;
export const MAX_CARDS = 10;

// Icons as inline SVG paths (emoji fonts are not everywhere), drawn in the text colour.
const ICONS = {
  bars: "M2 14h12M4 12V8M8 12V3M12 12V6",
  bubble: "M2.5 3.5h11v7h-6l-3 2.5v-2.5h-2z",
  pulse: "M1.5 8.5h3l2-5 3 9 2-4h3",
};
const KINDS = {
  chart: { label: "Chart", icon: ICONS.bars },
  sentiment: { label: "Sentiment", icon: ICONS.bubble },
  "live-data": { label: "Live data", icon: ICONS.pulse },
};

// ---------- helpers ----------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function icon(path) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("class", "viz-chip-icon");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(ns, "path");
  line.setAttribute("d", path);
  svg.append(line);
  return svg;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const clone = (v) => (typeof structuredClone === "function" ? structuredClone(v) : JSON.parse(JSON.stringify(v)));

let plotlyPromise = null;

/** Load Plotly once, with a <script> tag; resolves to window.Plotly. */
export function loadPlotly(src = PLOTLY_SRC) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.async = true;
      script.dataset.vendor = "plotly";
      script.onload = () => (window.Plotly ? resolve(window.Plotly) : reject(new Error("Plotly did not define window.Plotly")));
      script.onerror = () => {
        plotlyPromise = null; // a later visualization tries again
        script.remove();
        reject(new Error(`could not load ${src}`));
      };
      document.head.append(script);
    });
  }
  return plotlyPromise;
}

/** The page's colours (style.css custom properties), read now: they follow the colour scheme. */
function themeColors() {
  const css = getComputedStyle(document.documentElement);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    text: v("--text", "#1c2230"),
    muted: v("--muted", "#667085"),
    border: v("--border", "#e2e5ea"),
    surface: v("--surface", "#ffffff"),
    colorway: [
      v("--accent", "#4f5bd5"),
      v("--stage-tools_done", "#0ea5a4"),
      v("--stage-turn_end", "#f59e0b"),
      v("--stage-tts_first_audio", "#a855f7"),
      v("--ok", "#12b76a"),
      v("--danger", "#d92d20"),
    ],
    font: getComputedStyle(document.body).fontFamily,
  };
}

function titleText(title) {
  if (typeof title === "string") return title;
  if (isObj(title) && typeof title.text === "string") return title.text;
  return "";
}

/** The figure's layout with the page's theme: transparent backgrounds, theme text and grid
 * colours, compact margins, no fixed width (the card sizes it), the card's own title. */
export function themedLayout(layout, { height = 220, keepTitle = false } = {}) {
  const c = themeColors();
  const out = isObj(layout) ? clone(layout) : {};
  delete out.template; // Python's default template paints white backgrounds
  delete out.width;
  if (!keepTitle) delete out.title;
  const axisKeys = Object.keys(out).filter((k) => /^[xy]axis\d*$/.test(k));
  for (const key of new Set(["xaxis", "yaxis", ...axisKeys])) {
    const axis = isObj(out[key]) ? out[key] : {};
    out[key] = {
      automargin: true,
      ...axis,
      gridcolor: c.border,
      linecolor: c.border,
      zerolinecolor: c.border,
      tickfont: { color: c.muted, ...(isObj(axis.tickfont) ? axis.tickfont : {}) },
    };
  }
  return {
    ...out,
    autosize: true,
    height: isNum(out.height) ? Math.min(out.height, 360) : height,
    margin: { l: 44, r: 12, t: keepTitle ? 36 : 10, b: 36, pad: 0 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: c.font, size: 12, ...(isObj(out.font) ? out.font : {}), color: c.text },
    colorway: out.colorway ?? c.colorway,
    legend: { orientation: "h", x: 0, y: -0.2, ...(isObj(out.legend) ? out.legend : {}), font: { color: c.muted } },
    hoverlabel: { bgcolor: c.surface, bordercolor: c.border, font: { color: c.text } },
  };
}

const PLOT_CONFIG = { responsive: true, displayModeBar: false, displaylogo: false, scrollZoom: false };

function when(value) {
  if (value === undefined || value === null || value === "") return null;
  const date = isNum(value) ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString();
}

function sentimentOf(viz) {
  const s = isObj(viz.sentiment) ? viz.sentiment : viz;
  const compound = [s.compound, s.average_compound, s.score, viz.compound, viz.average_compound].find(isNum);
  let label = typeof s.label === "string" ? s.label : typeof viz.label === "string" ? viz.label : null;
  if (!label && isNum(compound)) label = compound >= 0.05 ? "positive" : compound <= -0.05 ? "negative" : "neutral";
  return { label, compound: isNum(compound) ? compound : null };
}

// ---------- the panel ----------

export class Visuals {
  /**
   * container: the #visuals aside (the panel is appended, below the latency panel).
   * transcript: the Transcript (transcript.js), to link each card from its bot entry.
   */
  constructor(container, { transcript = null, maxCards = MAX_CARDS } = {}) {
    this.transcript = transcript;
    this.maxCards = maxCards;
    this.count = 0;
    this.cards = []; // newest first: {id, card, plot, viz, turnId}
    this.waiting = []; // links for a bot entry that has not opened yet: {turnId, entry}

    this.root = el("section", "viz-section visuals-panel");
    this.root.id = "visuals-panel";
    this.root.setAttribute("aria-labelledby", "visuals-heading");
    this.root.hidden = true; // until the first visualization
    const head = el("div", "viz-head");
    const heading = el("h2", null, "Charts");
    heading.id = "visuals-heading";
    this.sub = el("span", "viz-sub");
    head.append(heading, this.sub);
    this.list = el("ol", "viz-list");
    this.root.append(head, this.list);
    container.append(this.root);

    transcript?.onBotTurn?.((li) => this.botTurnOpened(li));
    window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", () => this.retheme());
  }

  /** Handler for the `visualization` server message. */
  add(data) {
    const viz = data?.visualization;
    if (!isObj(viz)) return null;
    const type = KINDS[viz.type] ? viz.type : "chart";
    const kind = KINDS[type];
    const figure = isObj(viz.figure) ? viz.figure : null;
    const title = viz.title || titleText(figure?.layout?.title) || kind.label;
    const id = `viz-${++this.count}`;

    const card = el("li", `viz-card viz-${type}`);
    card.id = id;
    card.tabIndex = -1;
    card.dataset.type = type;
    if (data.turn_id) card.dataset.turnId = data.turn_id;
    if (data.utterance_id) card.dataset.utteranceId = data.utterance_id;
    if (data.tool_call_id) card.dataset.toolCallId = data.tool_call_id;
    if (viz.result_id) card.dataset.resultId = viz.result_id;
    card.setAttribute("aria-labelledby", `${id}-title`);

    const head = el("header", "viz-card-head");
    const h = el("h3", "viz-title", title);
    h.id = `${id}-title`;
    const badge = el("span", "viz-kind", kind.label);
    head.append(h, badge);
    card.append(head);

    if (type === "sentiment") card.append(this.renderSentiment(viz));
    if (type === "live-data") card.append(this.renderLive(viz));

    let plot = null;
    if (figure && Array.isArray(figure.data)) {
      plot = el("div", "viz-plot");
      plot.setAttribute("role", "img");
      plot.setAttribute("aria-label", `${kind.label}: ${title}`);
      card.append(plot);
    }
    const caption = viz.summary ?? viz.caption;
    if (typeof caption === "string" && caption.trim()) card.append(el("p", "viz-caption", caption));

    const entry = { id, card, plot, viz: { ...viz, figure }, turnId: data.turn_id ?? null, title, type };
    this.cards.unshift(entry);
    this.list.prepend(card);
    this.root.hidden = false;
    this.trim();
    this.sub.textContent = `${this.cards.length} shown`;
    if (plot) this.draw(entry);
    this.link(entry);
    return card;
  }

  renderSentiment(viz) {
    const { label, compound } = sentimentOf(viz);
    const box = el("div", "sentiment-summary");
    const tone = label ? label.toLowerCase() : "unknown";
    box.dataset.tone = tone;
    box.append(el("span", "sentiment-label", label ? label[0].toUpperCase() + label.slice(1) : "—"));
    const score = el("span", "sentiment-score", compound === null ? "" : `${compound >= 0 ? "+" : ""}${compound.toFixed(2)}`);
    score.title = "Compound score, from −1 (negative) to +1 (positive)";
    box.append(score);
    if (compound !== null) {
      const scale = el("span", "sentiment-scale");
      scale.setAttribute("aria-hidden", "true");
      const mark = el("span", "sentiment-mark");
      mark.style.left = `${(((Math.max(-1, Math.min(1, compound)) + 1) / 2) * 100).toFixed(1)}%`;
      scale.append(mark);
      box.append(scale);
    }
    return box;
  }

  renderLive(viz) {
    const box = el("div", "live-summary");
    const dot = el("span", "live-dot");
    dot.setAttribute("aria-hidden", "true");
    box.append(dot, el("span", "live-label", "Live"));
    if (viz.metric) box.append(el("span", "live-meta live-metric", String(viz.metric).replace(/_/g, " ")));
    // Sent as the bot starts presenting it: without a timestamp, "now" is when it was measured.
    const at = when(viz.as_of ?? viz.updated_at ?? viz.timestamp) ?? new Date().toLocaleTimeString();
    box.append(el("span", "live-meta", `as of ${at}`));
    if (viz.source) box.append(el("span", "live-meta", String(viz.source)));
    return box;
  }

  async draw(entry) {
    try {
      const Plotly = await loadPlotly();
      if (!entry.plot.isConnected) return; // trimmed away while Plotly loaded
      const figure = entry.viz.figure;
      await Plotly.newPlot(entry.plot, clone(figure.data), themedLayout(figure.layout), PLOT_CONFIG);
      entry.card.classList.add("drawn");
    } catch (err) {
      console.warn("[visuals] chart not drawn:", err);
      entry.plot.classList.add("viz-error");
      entry.plot.textContent = "Chart unavailable (the chart library did not load).";
    }
  }

  /** Redraw every chart with the current colour scheme. */
  retheme() {
    if (!window.Plotly) return;
    for (const entry of this.cards) {
      if (!entry.plot || !entry.card.classList.contains("drawn")) continue;
      window.Plotly.react(entry.plot, entry.plot.data, themedLayout(entry.viz.figure.layout), PLOT_CONFIG);
    }
  }

  trim() {
    while (this.cards.length > this.maxCards) {
      const old = this.cards.pop();
      this.takeDown(old);
      for (const a of document.querySelectorAll(`a.viz-chip[href="#${old.id}"]`)) {
        a.classList.add("gone");
        a.removeAttribute("href");
        a.title = "No longer shown (only the latest charts are kept)";
      }
    }
  }

  /** Handler for the `visualization-withdrawn` server message: the cards of a reply the user
   * went on over before hearing it go, with their transcript links (the answer to the whole
   * request brings its own). */
  withdraw(data) {
    const ids = new Set(Array.isArray(data?.tool_call_ids) ? data.tool_call_ids : []);
    const gone = this.cards.filter((entry) => ids.has(entry.card.dataset.toolCallId));
    for (const entry of gone) {
      this.takeDown(entry);
      for (const a of document.querySelectorAll(`a.viz-chip[href="#${entry.id}"]`)) a.remove();
    }
    this.cards = this.cards.filter((entry) => !gone.includes(entry));
    this.waiting = this.waiting.filter((entry) => !gone.includes(entry));
    this.sub.textContent = `${this.cards.length} shown`;
    this.root.hidden = this.cards.length === 0;
  }

  takeDown(entry) {
    if (entry.plot && window.Plotly) window.Plotly.purge(entry.plot);
    entry.card.remove();
  }

  // ---------- transcript links ----------

  /** Link the card from the bot transcript entry of its turn: the entry already tagged with
   * the turn id, else the bot entry open now (the answer is being spoken), else the next one. */
  link(entry) {
    const list = this.transcript?.list;
    if (!list) return;
    let li = null;
    if (entry.turnId) {
      li = [...list.querySelectorAll("li.turn.bot")].find((node) => node.dataset.turnId === entry.turnId) ?? null;
    }
    const open = this.transcript.bot?.li;
    if (!li && open && (!open.dataset.turnId || !entry.turnId || open.dataset.turnId === entry.turnId)) li = open;
    if (li) this.attach(li, entry);
    else this.waiting.push(entry);
  }

  botTurnOpened(li) {
    if (!this.waiting.length) return;
    const last = this.waiting[this.waiting.length - 1];
    const same = this.waiting.filter((e) => e.turnId === last.turnId && e.card.isConnected);
    this.waiting = [];
    for (const entry of same) this.attach(li, entry);
  }

  attach(li, entry) {
    if (entry.turnId && !li.dataset.turnId) li.dataset.turnId = entry.turnId;
    let box = li.querySelector(":scope > .turn-visuals");
    if (!box) {
      box = el("div", "turn-visuals");
      li.append(box);
    }
    const kind = KINDS[entry.type] ?? KINDS.chart;
    const a = el("a", "viz-chip");
    a.href = `#${entry.id}`;
    a.dataset.type = entry.type;
    a.title = `Show the ${kind.label.toLowerCase()}: ${entry.title}`;
    a.append(icon(kind.icon), el("span", "viz-chip-title", entry.title));
    a.addEventListener("click", (event) => {
      event.preventDefault();
      this.reveal(entry.id);
    });
    box.append(a);
    this.transcript.scroll?.();
  }

  /** Scroll the card into view and flash it. */
  reveal(id) {
    const card = document.getElementById(id);
    if (!card) return;
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    card.focus({ preventScroll: true });
    card.classList.remove("flash");
    void card.offsetWidth; // restart the animation
    card.classList.add("flash");
  }
}

/** Create the panel in `container` and subscribe it to the visualization server messages. */
export function initVisuals(container, options = {}) {
  const visuals = new Visuals(container, options);
  onServerMessage("visualization", (data) => visuals.add(data));
  onServerMessage("visualization-withdrawn", (data) => visuals.withdraw(data));
  return visuals;
}
