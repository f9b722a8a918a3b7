"""Typed settings for the whole product, read once from the environment (and `.env`).

Every field is documented in the README's configuration table. Non-secret settings use the
`AGENT_` prefix; provider keys keep the names their providers document (`OPENAI_API_KEY`, ...).
"""

import socket
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.costs import PriceTable


class ToolMode(str, Enum):
    NATIVE = "native"
    ROUTED = "routed"


class ResultSpeaker(str, Enum):
    AUTO = "auto"
    TOOL = "tool"
    LLM = "llm"


class Provider(str, Enum):
    AUTO = "auto"
    EMBEDDED = "embedded"
    OPENAI = "openai"
    DEEPGRAM = "deepgram"
    ELEVENLABS = "elevenlabs"
    # Fixed-delay stand-ins (bot/services/benchmark.py) to measure what the server itself adds.
    BENCHMARK = "benchmark"


class BenchmarkFault(NamedTuple):
    """One injected failure of a benchmark provider: `<stage>:<kind>@<turn>`."""

    stage: Literal["stt", "llm", "tts"]
    kind: Literal["error", "hang"]
    turn: int  # 1-based user turn of the session


def parse_benchmark_faults(value: str) -> tuple[BenchmarkFault, ...]:
    """`llm:error@1,tts:hang@2` -> faults; a malformed entry raises naming the setting."""
    faults = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        stage_kind, _, turn = entry.partition("@")
        stage, _, kind = stage_kind.partition(":")
        valid_turn = turn.isdigit() and int(turn) >= 1
        if stage not in ("stt", "llm", "tts") or kind not in ("error", "hang") or not valid_turn:
            raise ValueError(
                f"AGENT_BENCHMARK_FAULTS: bad entry {entry!r}; expected <stage>:<kind>@<turn> with"
                " stage stt|llm|tts, kind error|hang and a turn number from 1, e.g. llm:error@1"
            )
        faults.append(BenchmarkFault(stage, kind, int(turn)))
    return tuple(faults)


MIN_API_KEY_CHARS = 16

# Each stage's cloud provider and the setting that holds its key.
CLOUD_PROVIDERS = {
    "stt": (Provider.DEEPGRAM, "deepgram_api_key"),
    "llm": (Provider.OPENAI, "openai_api_key"),
    "tts": (Provider.ELEVENLABS, "elevenlabs_api_key"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_", env_file=".env", extra="ignore")

    # --- server ---
    host: str = Field("127.0.0.1", description="Interface the server binds to.")
    port: int = Field(7860, description="TCP port of the server.")
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Server log level; DEBUG adds every transcript, reply and stage timing.",
    )
    data_dir: Path = Field(
        Path.home() / ".cache" / "voice-agent",
        description="Where prepared model files (assembled LLM, converted STT) are cached.",
    )
    greeting: str = Field(
        "Hi! Ask me anything.",
        description="One short sentence the bot says when a user connects; empty disables it.",
    )

    # --- records ---
    store_path: Path | None = Field(
        None, description="SQLite file of session records (default: <data_dir>/sessions.sqlite3)."
    )
    retention_days: float = Field(
        30.0, description="Session records older than this are pruned (0 keeps them forever)."
    )

    shutdown_goodbye: str = Field(
        "Sorry, I have to go now: the server is restarting. Goodbye!",
        description="What active sessions hear when the server is stopped (SIGTERM).",
    )
    drain_timeout_secs: float = Field(
        15.0, description="How long a stopping server waits for sessions to say goodbye."
    )

    # --- limits and auth (README: Security and limits) ---
    max_sessions: int = Field(
        32, ge=0, description="Most concurrent sessions over all transports; one more is refused (0: no limit)."
    )
    max_loop_busy: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A new session is refused while the event loop that every session shares is busier than this share of the last 3 s (0: never; 0.85 suits the cloud and benchmark stacks).",
    )
    max_loop_lag_ms: float = Field(
        0.0,
        ge=0,
        description="A new session is refused while that event loop wakes up this late (90th percentile over 3 s; 0: never; 250 suits the cloud and benchmark stacks).",
    )
    idle_timeout_secs: float = Field(
        300.0, ge=0, description="A session with no user speech or message for this long ends (0: never)."
    )
    max_session_secs: float = Field(
        3600.0, ge=0, description="A session ends once it has lasted this long (0: no limit)."
    )
    max_text_chars: int = Field(
        2000, ge=1, description="Longest typed message (RTVI send-text) in characters; a longer one is refused."
    )
    max_text_per_sec: float = Field(
        1.0, gt=0, description="Typed messages a client may send per second, on average; more are refused."
    )
    text_burst: int = Field(
        5, ge=1, description="Typed messages a client may send at once before AGENT_MAX_TEXT_PER_SEC applies."
    )
    audio_rate_limit: float = Field(
        1.25,
        ge=1,
        description="Microphone audio a WebSocket client may send, as a multiple of real time averaged over AGENT_AUDIO_RATE_WINDOW_SECS; audio beyond it is dropped and refused.",
    )
    audio_rate_window_secs: float = Field(
        5.0, gt=0, description="The window AGENT_AUDIO_RATE_LIMIT averages over."
    )
    audio_burst_secs: float = Field(
        2.0,
        ge=0,
        description="Seconds of audio a client may send at once on top of the averaged rate (a client catching up after a network stall).",
    )
    max_utterance_secs: float = Field(
        30.0, gt=0, description="Longest the user may speak without a pause; the utterance then ends and is transcribed."
    )
    max_context_messages: int = Field(
        60,
        ge=4,
        description="Most messages of the conversation kept for the LLM, for every provider; past it the oldest turns are dropped (down to three quarters, so a cached prompt stays valid for several turns).",
    )
    max_results_per_session: int = Field(
        50, ge=1, description="Most tool results (each with its picture) a session keeps; a tool call past it is refused."
    )
    abuse_refusals: int = Field(
        10,
        ge=1,
        description="A client refused this many times within AGENT_ABUSE_WINDOW_SECS (bad or over-limit messages, seconds of excess audio) is disconnected (WebSocket close 1008).",
    )
    abuse_window_secs: float = Field(10.0, gt=0, description="The window AGENT_ABUSE_REFUSALS counts over.")
    server_id: str = Field(
        "",
        description="This server's name on the session rows it writes, so that at start it closes only its own unfinished sessions as crashed (several servers may share a database); empty: <hostname>:<AGENT_PORT>.",
    )
    store_spool_writes: int = Field(
        1000,
        ge=1,
        description="Writes of session records kept in memory while the database refuses them (locked, full disk), retried in order until it takes them; past this, writes are dropped and logged.",
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest HTTP request body any route accepts; a larger one gets 413."
    )
    idle_goodbye: str = Field(
        "I haven't heard from you for a while, so I'm hanging up. Goodbye!",
        description="What a session hears when it ends for being idle.",
    )
    max_session_goodbye: str = Field(
        "We have reached the time limit for this conversation. Goodbye!",
        description="What a session hears when it ends at the maximum duration.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, /api/* and /metrics need it as a bearer token and every session"
        " needs a one-use token from POST /api/tokens.",
    )
    token_ttl_secs: float = Field(
        60.0, gt=0, description="Lifetime of a session token from POST /api/tokens."
    )
    metrics_public: bool = Field(
        False, description="Serve /metrics without the API key (for Prometheus scrapers)."
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of extra browser origins allowed to connect, besides the"
        " server's own; * allows any.",
    )

    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of host names the server answers to (the Host header, on HTTP"
        " and WebSocket alike), besides 127.0.0.1, localhost, ::1 and AGENT_HOST when it is a"
        " concrete address; a deployment behind a proxy lists its public name. Any other Host"
        " is refused (a DNS-rebinding page cannot reach a local server).",
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value):
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value):
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("api_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None):
        if value is not None and len(value.get_secret_value().strip()) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"AGENT_API_KEY is {len(value.get_secret_value().strip())} characters; an empty or"
                f" short key would leave the server open, so use at least {MIN_API_KEY_CHARS}"
                " (for example: python -c 'import secrets; print(secrets.token_urlsafe(32))'),"
                " or unset it to serve without auth on loopback"
            )
        return value

    # --- provider per stage: auto = cloud when its key is set, embedded otherwise ---
    stt_provider: Provider = Field(Provider.AUTO, description="auto, embedded, deepgram or benchmark.")
    llm_provider: Provider = Field(Provider.AUTO, description="auto, embedded, openai or benchmark.")
    tts_provider: Provider = Field(Provider.AUTO, description="auto, embedded, elevenlabs or benchmark.")

    # --- benchmark providers: fixed delays, never chosen by `auto` ---
    benchmark_stt_delay_ms: float = Field(
        150.0, ge=0, description="Benchmark STT: final transcript this long after the VAD stop."
    )
    benchmark_llm_delay_ms: float = Field(
        350.0, ge=0, description="Benchmark LLM: first token this long after the request."
    )
    benchmark_tts_delay_ms: float = Field(
        150.0, ge=0, description="Benchmark TTS: first audio this long after each sentence."
    )
    benchmark_faults: Annotated[tuple[BenchmarkFault, ...], NoDecode] = Field(
        (),
        description="Benchmark providers' injected failures, <stage>:<kind>@<turn> comma list"
        " (stage stt|llm|tts, kind error|hang), e.g. llm:error@1,tts:hang@2.",
    )

    # --- embedded LLM ---
    llm_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="Embedded LLM: qwen2.5-coder-0.5b (default) or smollm2-135m.",
    )
    llm_threads: int = Field(2, description="CPU threads for the embedded LLM.")
    llm_context_tokens: int = Field(
        4096, description="Context window per session slot of the embedded LLM."
    )
    llm_parallel_sessions: int = Field(
        4, description="KV-cache slots of the embedded LLM (sessions decoded side by side)."
    )
    llm_max_answer_tokens: int = Field(
        80, description="Hard cap on tokens in one spoken answer (keeps answers short)."
    )
    llm_speculative_prefill: bool = Field(
        True,
        description="Prefill the embedded LLM with the user's interim words while they speak.",
    )
    tool_result_speech: ResultSpeaker = Field(
        ResultSpeaker.AUTO,
        description="Who presents a tool's result: tool (its own sentence is spoken at once, "
        "no second LLM request; the LLM answers only an error), llm (the LLM is asked again "
        "with the result), auto (tool on the embedded LLM, llm on a cloud one).",
    )
    llm_serial_replies: bool = Field(
        True,
        description="Embedded LLM: compute replies' first sentences one at a time, in turn order"
        " (on a CPU, replies batched together all reach their first audio last).",
    )
    llm_temperature: float = Field(
        0.0, description="Sampling temperature of the LLM (0: the most reliable tool routing)."
    )

    # --- embedded STT / TTS ---
    stt_threads: int = Field(2, description="CPU threads for the embedded STT (Moonshine).")
    stt_interim_interval_secs: float = Field(
        0.5, description="Re-decode the growing utterance this often for interim transcripts."
    )
    tts_voice: str = Field("en_US-joe-medium", description="Embedded Piper voice name.")
    tts_threads: int = Field(2, description="CPU threads for the embedded TTS (Piper).")

    # --- turn taking ---
    vad_stop_secs: float = Field(0.2, description="Silence before the VAD reports a stop.")
    smart_turn: bool = Field(True, description="Use the Smart Turn v3 model to end turns.")
    turn_max_silence_secs: float = Field(
        1.5,
        description="Longest pause after which a turn ends even if Smart Turn judges it unfinished.",
    )
    dictation_hold_secs: float = Field(
        0.8,
        ge=0,
        description="How much longer a turn waits, after the VAD stop, when its words say the "
        "request goes on (a chart with no numbers yet, a list ending in a comma, 'is this "
        "positive:' with nothing to judge); 0 never waits.",
    )

    # --- faults (bot/processors/fault_recovery.py) ---
    apology: str = Field(
        "Sorry, something went wrong on my side. Could you say that again?",
        description="Said (pre-rendered with the embedded Piper voice) when a turn fails.",
    )
    stt_timeout_secs: float = Field(
        4.0, gt=0, description="A turn fails if the STT gives no final transcript this long after the VAD stop."
    )
    llm_timeout_secs: float = Field(
        15.0, gt=0, description="A turn fails if the LLM's first token (or its next one) takes longer."
    )
    tts_timeout_secs: float = Field(
        6.0, gt=0, description="A turn fails if the TTS gives no audio this long after the answer's first text."
    )

    # --- cloud providers (Pipecat's own service classes) ---
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "AGENT_OPENAI_API_KEY"),
        description="OpenAI key; when set, `auto` uses OpenAI for the LLM.",
    )
    openai_base_url: str | None = Field(
        None, description="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp)."
    )
    openai_model: str = Field("gpt-4.1-mini", description="OpenAI chat model.")
    llm_tool_mode: ToolMode = Field(
        ToolMode.NATIVE,
        description="native: tools through OpenAI's `tools` field; routed: the embedded LLM's "
        "JSON-schema routing, for small models behind a base_url that emit no native tool calls.",
    )
    deepgram_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DEEPGRAM_API_KEY", "AGENT_DEEPGRAM_API_KEY"),
        description="Deepgram key; when set, `auto` uses Deepgram for STT.",
    )
    deepgram_model: str = Field("nova-3-general", description="Deepgram STT model.")
    deepgram_url: str = Field(
        "", description="Deepgram API base URL (empty: Deepgram's own); a wss:// or ws:// URL."
    )
    elevenlabs_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ELEVENLABS_API_KEY", "AGENT_ELEVENLABS_API_KEY"),
        description="ElevenLabs key; when set, `auto` uses ElevenLabs for TTS.",
    )
    elevenlabs_voice_id: str = Field(
        "21m00Tcm4TlvDq8ikWAM", description="ElevenLabs voice id (default: Rachel)."
    )
    elevenlabs_model: str = Field("eleven_flash_v2_5", description="ElevenLabs TTS model.")
    elevenlabs_url: str = Field(
        "wss://api.elevenlabs.io", description="ElevenLabs WebSocket API base URL."
    )
    daily_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DAILY_API_KEY", "AGENT_DAILY_API_KEY"),
        description="Daily key; enables POST /api/daily (rooms with a bot in them).",
    )
    daily_api_url: str = Field("https://api.daily.co/v1", description="Daily REST API base URL.")
    daily_room_minutes: float = Field(
        60.0, description="Lifetime of a Daily room and its tokens created by POST /api/daily."
    )
    daily_join_timeout_secs: float = Field(
        300.0, description="A Daily room's session ends if nobody joins it within this time."
    )
    prices: PriceTable = Field(
        default_factory=PriceTable,
        description="Provider list prices for the cost report; AGENT_PRICES as JSON overrides"
        " whole fields, e.g. {\"daily_per_participant_minute\": 0.003}.",
    )

    system_prompt: str = Field(
        "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one "
        "or two short plain sentences, with no lists, markdown or emoji.",
        description="System prompt of the assistant.",
    )

    @field_validator("benchmark_faults", mode="before")
    @classmethod
    def _parse_faults(cls, value):
        return parse_benchmark_faults(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_providers(self) -> "Settings":
        """Fail at startup, naming the setting, rather than when the first session starts."""
        for stage, (cloud, key_name) in CLOUD_PROVIDERS.items():
            chosen = getattr(self, f"{stage}_provider")
            if chosen not in (Provider.AUTO, Provider.EMBEDDED, Provider.BENCHMARK, cloud):
                raise ValueError(
                    f"AGENT_{stage.upper()}_PROVIDER={chosen.value} is not a {stage} provider;"
                    f" use auto, embedded, benchmark or {cloud.value}"
                )
            has_key = getattr(self, key_name) is not None
            if chosen is cloud and not has_key and not (stage == "llm" and self.openai_base_url):
                raise ValueError(
                    f"AGENT_{stage.upper()}_PROVIDER={cloud.value} needs {key_name.upper()}"
                )
        return self

    @property
    def server_name(self) -> str:
        return self.server_id or f"{socket.gethostname()}:{self.port}"

    @property
    def records_path(self) -> Path:
        return self.store_path or self.data_dir / "sessions.sqlite3"

    def resolved_tool_result_speech(self) -> ResultSpeaker:
        """`auto` speaks the tool's own sentence on the embedded LLM (a second request costs
        more than a second there) and lets a cloud model word it (worth its round trip)."""
        if self.tool_result_speech is not ResultSpeaker.AUTO:
            return self.tool_result_speech
        embedded = self.resolved("llm") is Provider.EMBEDDED
        return ResultSpeaker.TOOL if embedded else ResultSpeaker.LLM

    def resolved(self, stage: str) -> Provider:
        """The provider a stage really uses: `auto` becomes the cloud one when its key is set."""
        chosen: Provider = getattr(self, f"{stage}_provider")
        if chosen is not Provider.AUTO:
            return chosen
        cloud, key_name = CLOUD_PROVIDERS[stage]
        return cloud if getattr(self, key_name) is not None else Provider.EMBEDDED


@lru_cache
def get_settings() -> Settings:
    return Settings()
