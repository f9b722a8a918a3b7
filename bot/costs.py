"""What turns cost: provider prices as settings, the price of one turn, and a summary of many.

The embedded stack charges no fees. What it spends is CPU time, which is reported beside the
money rather than converted into it, because a CPU-second's price depends on where it runs.
"""

from collections import Counter

from pydantic import BaseModel, Field, field_validator

from bot.records import TurnRecord

COMPONENTS = ("llm", "stt", "tts", "transport")
SECONDS_PER_DAY = 86_400
DAYS_PER_MONTH = 30


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    input: float
    cached_input: float
    output: float


# List prices as each provider publishes them: OpenAI per million tokens, Deepgram streaming
# pay-as-you-go per audio minute, ElevenLabs API per thousand characters, Daily per
# participant-minute. They are settings, not facts: prices change and plans, commitments and
# discounts differ, so every one is overridable with AGENT_PRICES (JSON). An override replaces a
# whole field (a new `openai` table replaces all the listed models).
class PriceTable(BaseModel):
    openai: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
            "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
            "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
            "gpt-4o": ModelPrice(input=2.50, cached_input=1.25, output=10.00),
        },
        description="OpenAI model -> USD per million input / cached input / output tokens.",
    )
    openai_default: ModelPrice = Field(
        default_factory=lambda: ModelPrice(input=0.40, cached_input=0.10, output=1.60),
        description="Price of an OpenAI model missing from `openai` (gpt-4.1-mini's).",
    )
    deepgram_per_minute: dict[str, float] = Field(
        default_factory=lambda: {"nova-3-general": 0.0077, "nova-2": 0.0058, "default": 0.0077},
        description="Deepgram model -> USD per audio minute; `default` prices unlisted models.",
    )
    elevenlabs_per_1k_chars: dict[str, float] = Field(
        default_factory=lambda: {
            "eleven_flash_v2_5": 0.05,
            "eleven_turbo_v2_5": 0.05,
            "eleven_multilingual_v2": 0.10,
            "default": 0.10,
        },
        description="ElevenLabs model -> USD per thousand characters; `default` for the rest.",
    )
    daily_per_participant_minute: float = Field(0.004, description="Daily (WebRTC rooms) USD per participant-minute.")

    @field_validator("deepgram_per_minute", "elevenlabs_per_1k_chars")
    @classmethod
    def _has_default(cls, table: dict[str, float]) -> dict[str, float]:
        # Without it an unlisted model would silently cost nothing.
        if "default" not in table:
            raise ValueError("needs a 'default' entry for unlisted models")
        return table

    def llm(self, model: str) -> ModelPrice:
        return _lookup(self.openai, model, self.openai_default)

    def stt(self, model: str) -> float:
        return _lookup(self.deepgram_per_minute, model, self.deepgram_per_minute["default"])

    def tts(self, model: str) -> float:
        return _lookup(self.elevenlabs_per_1k_chars, model, self.elevenlabs_per_1k_chars["default"])


def _lookup(table: dict, model: str, default):
    """The exact name, else the longest listed name it starts with (OpenAI reports dated
    snapshots such as gpt-4o-mini-2024-07-18), else the default."""
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else default


def _split(provider_model: str) -> tuple[str, str]:
    provider, _, model = provider_model.partition(":")
    return provider, model


def llm_cost(prompt: int, cached: int, completion: int, price: ModelPrice) -> float:
    # OpenAI counts cached tokens inside prompt_tokens; only the rest pay the full input price.
    uncached = max(prompt - cached, 0)
    return (uncached * price.input + cached * price.cached_input + completion * price.output) / 1e6


def cost_summary(
    turns: list[TurnRecord],
    conversation_seconds: float,
    *,
    window_seconds: float | None = None,
    prices: PriceTable | None = None,
) -> dict:
    """Totals, rates, shares, projections and advice for a set of priced turns.

    `conversation_seconds` is the talk time the turns cover (per-minute figures). The
    projections extrapolate `window_seconds`, the wall-clock span the turns were observed in
    (idle time included), so they are what the server costs per day at the observed load;
    without it they are the cost of one conversation running nonstop. `prices` (the settings'
    table) is only used to suggest cheaper options; the turns carry their own cost.
    """
    prices = prices or PriceTable()
    components = {c: sum(t.cost.components.get(c, 0.0) for t in turns) for c in COMPONENTS}
    total = sum(components.values())
    minutes = conversation_seconds / 60
    span = window_seconds if window_seconds is not None else conversation_seconds
    per_day = total / span * SECONDS_PER_DAY if span > 0 else 0.0
    cpu: dict[str, float] = {}
    for turn in turns:
        for stage, seconds in turn.usage.cpu_seconds.items():
            cpu[stage] = cpu.get(stage, 0.0) + seconds
    cpu = dict(sorted(cpu.items()))
    cpu_per_minute = {s: v / minutes if minutes > 0 else 0.0 for s, v in cpu.items()}
    shares = {c: 100 * v / total if total > 0 else 0.0 for c, v in components.items()}
    return {
        "turns": len(turns),
        "conversation_seconds": conversation_seconds,
        "window_seconds": window_seconds,
        "components": components,
        "total": total,
        "per_turn": total / len(turns) if turns else 0.0,
        "per_minute": total / minutes if minutes > 0 else 0.0,
        "shares_percent": shares,
        "projection": {"per_day": per_day, "per_month": per_day * DAYS_PER_MONTH},
        "cpu_seconds": cpu,
        "cpu_seconds_per_minute": cpu_per_minute,
        "recommendations": _recommendations(turns, components, shares, cpu_per_minute, prices),
    }


def _usd(value: float) -> str:
    return f"${value:.4f}" if value >= 0.01 else f"${value:.6f}"


def _cheapest(table: dict[str, float]) -> tuple[str, float]:
    name = min((n for n in table if n != "default"), key=lambda n: (table[n], n))
    return name, table[name]


def _on(turns: list[TurnRecord], stage: str, provider: str) -> list[TurnRecord]:
    return [t for t in turns if _split(t.providers.get(stage, ""))[0] == provider]


def _recommendations(turns, components, shares, cpu_per_minute, prices: PriceTable) -> list[str]:
    if not turns:
        return []
    by_stage = ", ".join(f"{stage} {value:.1f}" for stage, value in cpu_per_minute.items())
    cpu_note = (
        f"CPU is the cost of the embedded stages: {sum(cpu_per_minute.values()):.1f}"
        f" CPU-seconds per minute of conversation" + (f" ({by_stage})." if by_stage else ".")
    )
    if sum(components.values()) == 0:
        return ["No fees: every stage is embedded or free. " + cpu_note]
    dominant = max(COMPONENTS, key=lambda c: components[c])
    advice = [f"{dominant} is {shares[dominant]:.0f}% of the cost ({_usd(components[dominant])})."]
    if dominant == "llm":
        advice += _llm_advice(_on(turns, "llm", "openai"), components["llm"], prices)
    elif dominant == "stt":
        minutes = sum(t.usage.stt_audio_seconds for t in _on(turns, "stt", "deepgram")) / 60
        name, rate = _cheapest(prices.deepgram_per_minute)
        if (alternative := minutes * rate) < components["stt"]:
            advice.append(f"Deepgram {name} would cost {_usd(alternative)} for the same audio.")
        advice.append("The embedded STT (AGENT_STT_PROVIDER=embedded) has no fee.")
    elif dominant == "tts":
        chars = sum(t.usage.tts_characters for t in _on(turns, "tts", "elevenlabs"))
        name, rate = _cheapest(prices.elevenlabs_per_1k_chars)
        if (alternative := chars / 1000 * rate) < components["tts"]:
            advice.append(f"ElevenLabs {name} would cost {_usd(alternative)} for the same text.")
        advice.append(
            f"Shorter answers cut it directly ({chars / len(turns):.0f} characters per turn); "
            "the embedded TTS (AGENT_TTS_PROVIDER=embedded) has no fee."
        )
    else:
        advice.append(
            "Daily bills each participant (the user and the bot)"
            f" {_usd(prices.daily_per_participant_minute)} per minute; the WebSocket or WebRTC"
            " transport has no per-minute fee."
        )
    if cpu_per_minute:
        advice.append(cpu_note)
    return advice


def _llm_advice(turns: list[TurnRecord], current: float, prices: PriceTable) -> list[str]:
    if not turns:
        return []
    prompt = sum(t.usage.llm_prompt_tokens for t in turns)
    cached = sum(t.usage.llm_cached_tokens for t in turns)
    completion = sum(t.usage.llm_completion_tokens for t in turns)
    advice = []
    alternatives = {m: llm_cost(prompt, cached, completion, p) for m, p in prices.openai.items()}
    cheapest = min(alternatives, key=lambda m: (alternatives[m], m))
    if alternatives[cheapest] < current:
        advice.append(
            f"{cheapest} would cost {_usd(alternatives[cheapest])} for the same tokens; "
            "the embedded LLM (AGENT_LLM_PROVIDER=embedded) has no fee."
        )
    model = Counter(_split(t.providers["llm"])[1] for t in turns).most_common(1)[0][0]
    price = prices.llm(model)
    prompt_cost = llm_cost(prompt, cached, 0, price)
    completion_cost = llm_cost(0, 0, completion, price)
    if prompt_cost > completion_cost:
        advice.append(
            f"Prompt tokens are {100 * prompt_cost / (prompt_cost + completion_cost):.0f}% of the"
            f" LLM cost ({prompt / len(turns):.0f} per turn, {100 * cached / prompt:.0f}% cached):"
            " trim the context (fewer remembered turns, a shorter system prompt) and keep its"
            " start unchanged so OpenAI caches it (cached input costs"
            f" ${price.cached_input:g} instead of ${price.input:g} per million tokens)."
        )
    return advice
