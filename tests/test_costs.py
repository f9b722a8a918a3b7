"""Cost arithmetic against hand-computed cases, the summary over turns, and price overrides."""

import pytest
from pydantic import ValidationError

from bot.costs import PriceTable, cost_summary
from bot.providers import price_turn
from bot.records import TurnRecord, Usage
from bot.settings import Settings

pytestmark = pytest.mark.unit

PRICES = PriceTable()
EMBEDDED = {
    "stt": "embedded:moonshine-base-en",
    "llm": "embedded:qwen2.5-coder-0.5b",
    "tts": "embedded:piper-en_US-joe-medium",
}
CLOUD = {
    "stt": "deepgram:nova-3-general",
    "llm": "openai:gpt-4.1-mini",
    "tts": "elevenlabs:eleven_flash_v2_5",
}


def price(usage: Usage, providers=CLOUD, transport="websocket", duration_secs=10.0):
    return price_turn(usage, providers, PRICES, transport=transport, duration_secs=duration_secs)


def test_llm_cached_prompt_tokens_pay_the_cached_price():
    cost = price(Usage(llm_prompt_tokens=1200, llm_cached_tokens=1000, llm_completion_tokens=80))
    # 200 uncached at $0.40/M, 1000 cached at $0.10/M, 80 completion at $1.60/M
    assert cost.components["llm"] == pytest.approx((200 * 0.40 + 1000 * 0.10 + 80 * 1.60) / 1e6)
    assert cost.components["llm"] == pytest.approx(308e-6)


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gpt-4.1", (100 * 2.00 + 50 * 8.00) / 1e6),
        ("gpt-4o-mini-2024-07-18", (100 * 0.15 + 50 * 0.60) / 1e6),  # dated snapshot: prefix
        ("some-new-model", (100 * 0.40 + 50 * 1.60) / 1e6),  # unlisted: gpt-4.1-mini's price
    ],
)
def test_llm_model_lookup(model, expected):
    cost = price(Usage(llm_prompt_tokens=100, llm_completion_tokens=50), {"llm": f"openai:{model}"})
    assert cost.components["llm"] == pytest.approx(expected)


def test_stt_and_tts_prices():
    usage = Usage(stt_audio_seconds=12.5, tts_characters=240)
    cost = price(usage)
    assert cost.components["stt"] == pytest.approx(12.5 / 60 * 0.0077)
    assert cost.components["tts"] == pytest.approx(240 / 1000 * 0.05)
    other = price(usage, {"stt": "deepgram:nova-2", "tts": "elevenlabs:eleven_multilingual_v2"})
    assert other.components["stt"] == pytest.approx(12.5 / 60 * 0.0058)
    assert other.components["tts"] == pytest.approx(240 / 1000 * 0.10)
    unlisted = price(usage, {"stt": "deepgram:whisper", "tts": "elevenlabs:eleven_v3"})
    assert unlisted.components["stt"] == pytest.approx(12.5 / 60 * 0.0077)
    assert unlisted.components["tts"] == pytest.approx(240 / 1000 * 0.10)


def test_total_is_the_sum_of_the_components():
    usage = Usage(llm_prompt_tokens=1200, llm_completion_tokens=80, stt_audio_seconds=3.0, tts_characters=100)
    cost = price(usage, transport="daily", duration_secs=30.0)
    assert set(cost.components) == {"llm", "stt", "tts", "transport"}
    expected = (1200 * 0.40 + 80 * 1.60) / 1e6 + 3.0 / 60 * 0.0077 + 100 / 1000 * 0.05 + 2 * 30.0 / 60 * 0.004
    assert cost.total == pytest.approx(expected)


def test_embedded_stack_costs_nothing():
    usage = Usage(
        llm_prompt_tokens=900,
        llm_completion_tokens=40,
        stt_audio_seconds=4.0,
        tts_characters=120,
        cpu_seconds={"llm": 0.8, "stt": 0.1, "tts": 0.3},
    )
    cost = price(usage, EMBEDDED)
    assert cost.components == {"llm": 0.0, "stt": 0.0, "tts": 0.0, "transport": 0.0}
    assert cost.total == 0.0


@pytest.mark.parametrize(
    "providers, tts_fee",
    [
        ({"stt": "benchmark:200ms", "llm": "benchmark:300ms", "tts": "benchmark:150ms"}, 0.0),
        ({"llm": "openai-compatible:qwen2.5"}, 0.0),  # a self-hosted server: not OpenAI's prices
        ({"llm": "unknown:model", "stt": "", "tts": "elevenlabs"}, 120 / 1000 * 0.10),  # no model: the default
    ],
)
def test_only_the_billed_providers_cost_money(providers, tts_fee):
    usage = Usage(llm_prompt_tokens=900, llm_completion_tokens=40, stt_audio_seconds=4.0, tts_characters=120)
    cost = price(usage, providers)
    assert cost.components["llm"] == cost.components["stt"] == 0.0
    assert cost.components["tts"] == pytest.approx(tts_fee)


@pytest.mark.parametrize(
    "transport, expected",
    [
        ("daily", 2 * 45.0 / 60 * 0.004),  # user + bot, 0.75 minutes each
        ("websocket", 0.0),
        ("webrtc", 0.0),
    ],
)
def test_transport_fees(transport, expected):
    cost = price(Usage(), EMBEDDED, transport=transport, duration_secs=45.0)
    assert cost.components["transport"] == pytest.approx(expected)
    assert cost.total == pytest.approx(expected)


def turn(index, usage, providers=CLOUD, transport="websocket", duration=10.0):
    record = TurnRecord(
        turn_id=f"t{index}",
        session_id="s",
        index=index,
        usage=usage,
        providers=providers,
        started_at=1000.0 + 20 * index,
    )
    record.ended_at = record.started_at + duration
    record.cost = price_turn(usage, providers, PRICES, transport=transport, duration_secs=duration)
    return record


def test_summary_totals_rates_shares_and_projections():
    usage = Usage(llm_prompt_tokens=2000, llm_completion_tokens=100, stt_audio_seconds=6.0, tts_characters=200)
    turns = [turn(i, usage) for i in range(3)]
    llm = 3 * (2000 * 0.40 + 100 * 1.60) / 1e6
    stt = 3 * 6.0 / 60 * 0.0077
    tts = 3 * 200 / 1000 * 0.05
    total = llm + stt + tts
    summary = cost_summary(turns, conversation_seconds=30.0, window_seconds=600.0)

    assert summary["turns"] == 3
    assert summary["components"] == pytest.approx({"llm": llm, "stt": stt, "tts": tts, "transport": 0.0})
    assert summary["total"] == pytest.approx(total)
    assert summary["per_turn"] == pytest.approx(total / 3)
    assert summary["per_minute"] == pytest.approx(total / 0.5)  # 30 s of conversation
    assert summary["shares_percent"]["tts"] == pytest.approx(100 * tts / total)
    assert sum(summary["shares_percent"].values()) == pytest.approx(100.0)
    # observed over 600 s of wall clock: the rate is total / 600 per second
    assert summary["projection"]["per_day"] == pytest.approx(total / 600 * 86_400)
    assert summary["projection"]["per_month"] == pytest.approx(total / 600 * 86_400 * 30)
    # without a window, the conversation itself is the time base
    nonstop = cost_summary(turns, conversation_seconds=30.0)
    assert nonstop["projection"]["per_day"] == pytest.approx(total / 30 * 86_400)


def test_summary_recommends_a_cheaper_tts_when_it_dominates():
    turns = [turn(i, Usage(tts_characters=400), {"tts": "elevenlabs:eleven_multilingual_v2"}) for i in range(2)]
    advice = cost_summary(turns, 20.0)["recommendations"]
    assert advice[0] == "tts is 100% of the cost ($0.0800)."  # 2 x 400/1000 x $0.10
    # eleven_flash_v2_5 and eleven_turbo_v2_5 tie at $0.05; the name breaks the tie
    assert "ElevenLabs eleven_flash_v2_5 would cost $0.0400" in advice[1]
    assert "400 characters per turn" in advice[2]


def test_summary_recommends_trimming_the_prompt_when_prompt_tokens_dominate():
    usage = Usage(llm_prompt_tokens=3000, llm_cached_tokens=0, llm_completion_tokens=50)
    turns = [turn(i, usage, {"llm": "openai:gpt-4.1"}) for i in range(2)]
    advice = cost_summary(turns, 20.0)["recommendations"]
    assert advice[0].startswith("llm is 100% of the cost")
    # the same tokens on gpt-4o-mini: 2 x (3000 x 0.15 + 50 x 0.60) / 1e6 = $0.000960
    assert advice[1].startswith("gpt-4o-mini would cost $0.000960")
    # prompt 3000 x 2.00 vs completion 50 x 8.00: 6000 / 6400 = 94%
    assert advice[2].startswith("Prompt tokens are 94% of the LLM cost (3000 per turn, 0% cached)")


def test_summary_recommends_leaving_daily_when_transport_dominates():
    turns = [turn(0, Usage(), EMBEDDED, transport="daily", duration=60.0)]
    summary = cost_summary(turns, 60.0)
    assert summary["components"]["transport"] == pytest.approx(2 * 1.0 * 0.004)
    assert summary["recommendations"][0] == "transport is 100% of the cost ($0.008000)."
    assert "WebSocket or WebRTC" in summary["recommendations"][1]


def test_all_embedded_summary_reports_cpu_instead_of_fees():
    usage = Usage(cpu_seconds={"llm": 1.5, "stt": 0.25, "tts": 0.5})
    turns = [turn(i, usage, EMBEDDED) for i in range(4)]  # 40 s of conversation
    summary = cost_summary(turns, 40.0)
    assert summary["total"] == 0.0
    assert summary["shares_percent"] == {"llm": 0.0, "stt": 0.0, "tts": 0.0, "transport": 0.0}
    assert summary["projection"] == {"per_day": 0.0, "per_month": 0.0}
    assert summary["cpu_seconds"] == {"llm": 6.0, "stt": 1.0, "tts": 2.0}
    assert summary["cpu_seconds_per_minute"] == pytest.approx({"llm": 9.0, "stt": 1.5, "tts": 3.0})
    assert summary["recommendations"] == [
        "No fees: every stage is embedded or free. CPU is the cost of the embedded stages: "
        "13.5 CPU-seconds per minute of conversation (llm 9.0, stt 1.5, tts 3.0)."
    ]


def test_empty_summary():
    summary = cost_summary([], 0.0)
    assert summary["total"] == 0.0 and summary["per_turn"] == 0.0 and summary["per_minute"] == 0.0
    assert summary["recommendations"] == []


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file


def test_prices_default_in_settings(clean_env):
    assert Settings().prices == PriceTable()


def test_agent_prices_env_overrides_whole_fields(clean_env, monkeypatch):
    monkeypatch.setenv(
        "AGENT_PRICES",
        '{"daily_per_participant_minute": 0.003,'
        ' "openai": {"gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10}}}',
    )
    prices = Settings().prices
    assert prices.daily_per_participant_minute == 0.003
    assert prices.llm("gpt-5").output == 10
    assert prices.llm("gpt-4o") == prices.openai_default  # the whole table was replaced
    assert prices.deepgram_per_minute == PriceTable().deepgram_per_minute  # untouched field
    cost = price_turn(Usage(), {}, prices, transport="daily", duration_secs=60.0)
    assert cost.total == pytest.approx(2 * 1.0 * 0.003)


def test_a_rate_table_without_default_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("AGENT_PRICES", '{"deepgram_per_minute": {"nova-3": 0.005}}')
    with pytest.raises(ValidationError, match="default"):
        Settings()
