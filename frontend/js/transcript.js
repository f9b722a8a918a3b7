// Live transcript: one entry per turn.
//  - user turns show interim text (lighter, not announced) replaced by the final text;
//  - bot turns are built from segments (sentences) and grow as the bot speaks them; text the
//    bot is about to say is shown lighter until it has been spoken.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function joinText(parts) {
  return parts
    .map((p) => p.trim())
    .filter(Boolean)
    .join(" ");
}

export class Transcript {
  constructor(listElement, { onChange = null } = {}) {
    this.list = listElement;
    this.onChange = onChange;
    this.user = null; // open user turn: {li, finalSpan, interimSpan, finals: []}
    this.bot = null; // open bot turn: {li, spokenEl, pendingEl, segments: Map(id -> {spoken, pending})}
    this.botTurnListeners = new Set();
  }

  /** Call fn(li) whenever a bot entry opens (panels attach things to it). Returns an unsubscribe. */
  onBotTurn(fn) {
    this.botTurnListeners.add(fn);
    return () => this.botTurnListeners.delete(fn);
  }

  scroll() {
    const box = this.list.parentElement;
    if (box) box.scrollTop = box.scrollHeight;
    this.onChange?.();
  }

  newTurn(role, label) {
    const li = el("li", `turn ${role}`);
    li.dataset.role = role;
    li.append(el("span", "who", label));
    const text = el("p", "text");
    li.append(text);
    this.list.append(li);
    return { li, text };
  }

  // ---------- user ----------

  openUserTurn() {
    if (this.user) return this.user;
    this.closeBotTurn();
    const { li, text } = this.newTurn("user", "You");
    const finalSpan = el("span", "final");
    const interimSpan = el("span", "interim");
    interimSpan.setAttribute("aria-hidden", "true"); // only final text is announced
    text.append(finalSpan, interimSpan);
    this.user = { li, finalSpan, interimSpan, finals: [] };
    return this.user;
  }

  userInterim(text) {
    if (!text?.trim() || this.restates(text)) return;
    const turn = this.openUserTurn();
    turn.interimSpan.textContent = (turn.finals.length ? " " : "") + text.trim();
    turn.li.classList.add("pending");
    this.scroll();
  }

  userFinal(text) {
    if (!text?.trim() || this.restates(text)) return;
    const turn = this.openUserTurn();
    turn.finals.push(text);
    turn.finalSpan.textContent = joinText(turn.finals);
    turn.interimSpan.textContent = "";
    turn.li.classList.remove("pending");
    this.scroll();
  }

  /**
   * The user's request so far, transcribed again whole (a request dictated with pauses): it
   * replaces the parts the entry shows. Its `user-input` copy, before or after, adds nothing.
   */
  userRequest(text, final) {
    if (!text?.trim()) return;
    const turn = this.openUserTurn();
    turn.restated = text;
    turn.finals = final ? [text] : [];
    turn.finalSpan.textContent = final ? text.trim() : "";
    turn.interimSpan.textContent = final ? "" : text.trim();
    turn.li.classList.toggle("pending", !final);
    this.scroll();
  }

  restates(text) {
    return Boolean(this.user?.restated) && this.user.restated.trim() === text.trim();
  }

  closeUserTurn() {
    if (this.user && this.user.finals.length === 0) {
      // Only interim text ever arrived: keep it, but as the turn's text.
      const interim = this.user.interimSpan.textContent.trim();
      if (interim) this.userFinal(interim);
      else this.user.li.remove();
    }
    this.user = null;
  }

  // ---------- bot ----------

  openBotTurn() {
    if (this.bot) return this.bot;
    this.closeUserTurn();
    const { li, text } = this.newTurn("bot", "Bot");
    const spokenEl = el("span", "spoken");
    const pendingEl = el("span", "pending");
    pendingEl.setAttribute("aria-hidden", "true"); // announced once spoken
    text.append(spokenEl, pendingEl);
    this.bot = { li, spokenEl, pendingEl, segments: new Map() };
    for (const fn of this.botTurnListeners) {
      try {
        fn(li);
      } catch (err) {
        console.error("[transcript] bot turn listener failed:", err);
      }
    }
    return this.bot;
  }

  renderBot() {
    const segments = [...this.bot.segments.values()];
    const spoken = joinText(segments.map((seg) => seg.spoken));
    const pending = joinText(segments.map((seg) => seg.pending));
    this.bot.spokenEl.textContent = spoken;
    this.bot.pendingEl.textContent = pending ? (spoken ? " " : "") + pending : "";
  }

  /**
   * Update one segment (sentence) of the current bot turn: `spoken` is the part already
   * spoken (shown normally), `pending` the part about to be spoken (shown lighter).
   */
  botSegment(segmentId, spoken = "", pending = "") {
    if (!spoken?.trim() && !pending?.trim() && !this.bot?.segments.has(segmentId)) return;
    const turn = this.openBotTurn();
    const key = segmentId ?? `auto-${turn.segments.size}`;
    turn.segments.set(key, { spoken: spoken || "", pending: pending || "" });
    this.renderBot();
    this.scroll();
  }

  /** Append spoken text to the current bot turn (fallback when segments are not known). */
  botAppend(text) {
    this.botSegment(undefined, text, "");
  }

  /** True if the open bot turn has text that was about to be spoken. */
  get botHasPending() {
    return Boolean(this.bot && [...this.bot.segments.values()].some((seg) => seg.pending));
  }

  /**
   * End the current bot turn. An interrupted turn keeps its cut-off sentence (lighter: part
   * of it may have been heard) and is marked as interrupted.
   */
  closeBotTurn({ interrupted = false } = {}) {
    if (!this.bot) return;
    if (interrupted) this.bot.li.classList.add("interrupted");
    if (!this.bot.li.querySelector(".text").textContent.trim()) this.bot.li.remove();
    this.bot = null;
  }

  /**
   * The reply the user went on over before they could hear it answered nothing: its entry goes,
   * and the user's entry before it takes the rest of their request.
   */
  withdrawBotReply() {
    const bots = this.list.querySelectorAll("li.turn.bot");
    const reply = bots[bots.length - 1];
    const users = this.list.querySelectorAll("li.turn.user");
    const request = users[users.length - 1];
    if (!reply || (request && request.compareDocumentPosition(reply) & Node.DOCUMENT_POSITION_PRECEDING)) return;
    reply.remove();
    this.bot = null;
    if (request && !this.user) {
      const finalSpan = request.querySelector(".final");
      const interimSpan = request.querySelector(".interim");
      const finals = finalSpan.textContent.trim() ? [finalSpan.textContent] : [];
      this.user = { li: request, finalSpan, interimSpan, finals };
    }
    this.onChange?.();
  }

  // ---------- misc ----------

  note(text, kind = "info") {
    this.closeUserTurn();
    this.closeBotTurn();
    const li = el("li", `note ${kind}`, text);
    li.dataset.role = "note";
    this.list.append(li);
    this.scroll();
  }

  clear() {
    this.list.replaceChildren();
    this.user = null;
    this.bot = null;
    this.onChange?.();
  }
}
