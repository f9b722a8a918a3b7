"""Typed settings for the whole product, read once from the environment (and `.env`).

Every field is documented in the README's configuration table. Non-secret settings use the
`AGENT_` prefix; provider keys keep the names their providers document (`OPENAI_API_KEY`, ...).
"""

from enum import Enum
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.costs import PriceTable


class ToolMode(str, Enum):
    NATIVE = "native"
    ROUTED = "routed"


class Provider(str, Enum):
    AUTO = "auto"
    EMBEDDED = "embedded"
    OPENAI = "openai"
    DEEPGRAM = "deepgram"
    ELEVENLABS = "elevenlabs"


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

    # --- provider per stage: auto = cloud when its key is set, embedded otherwise ---
    stt_provider: Provider = Field(Provider.AUTO, description="auto, embedded or deepgram.")
    llm_provider: Provider = Field(Provider.AUTO, description="auto, embedded or openai.")
    tts_provider: Provider = Field(Provider.AUTO, description="auto, embedded or elevenlabs.")

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

    @model_validator(mode="after")
    def _check_providers(self) -> "Settings":
        """Fail at startup, naming the setting, rather than when the first session starts."""
        for stage, (cloud, key_name) in CLOUD_PROVIDERS.items():
            chosen = getattr(self, f"{stage}_provider")
            if chosen not in (Provider.AUTO, Provider.EMBEDDED, cloud):
                raise ValueError(
                    f"AGENT_{stage.upper()}_PROVIDER={chosen.value} is not a {stage} provider;"
                    f" use auto, embedded or {cloud.value}"
                )
            has_key = getattr(self, key_name) is not None
            if chosen is cloud and not has_key and not (stage == "llm" and self.openai_base_url):
                raise ValueError(
                    f"AGENT_{stage.upper()}_PROVIDER={cloud.value} needs {key_name.upper()}"
                )
        return self

    @property
    def records_path(self) -> Path:
        return self.store_path or self.data_dir / "sessions.sqlite3"

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
