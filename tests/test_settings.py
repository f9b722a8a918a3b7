"""Settings: which provider each stage resolves to, and the cloud services the factory builds
from them (constructing Pipecat's cloud services opens no connection)."""

import pytest
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
from pipecat.services.openai.llm import OpenAILLMService

from bot.providers import SPEAKABLE_TEXT, EmbeddedEngines, create_service
from bot.settings import Provider, Settings

pytestmark = pytest.mark.unit

KEY_VARS = {
    "llm": ("OPENAI_API_KEY", "AGENT_OPENAI_API_KEY"),
    "stt": ("DEEPGRAM_API_KEY", "AGENT_DEEPGRAM_API_KEY"),
    "tts": ("ELEVENLABS_API_KEY", "AGENT_ELEVENLABS_API_KEY"),
}
CLOUD = {"llm": Provider.OPENAI, "stt": Provider.DEEPGRAM, "tts": Provider.ELEVENLABS}
STAGES = list(CLOUD)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No key or AGENT_ setting from the outside, and no .env file in the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("AGENT_") or name in {v for pair in KEY_VARS.values() for v in pair}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_all_embedded():
    settings = Settings()
    for stage in STAGES:
        assert getattr(settings, f"{stage}_provider") is Provider.AUTO
        assert settings.resolved(stage) is Provider.EMBEDDED


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("which", [0, 1])
def test_a_key_switches_only_its_stage_to_the_cloud(monkeypatch, stage, which):
    monkeypatch.setenv(KEY_VARS[stage][which], "secret-key")
    settings = Settings()
    for other in STAGES:
        expected = CLOUD[other] if other == stage else Provider.EMBEDDED
        assert settings.resolved(other) is expected, other


def test_all_keys_make_everything_cloud(monkeypatch):
    for stage in STAGES:
        monkeypatch.setenv(KEY_VARS[stage][0], "k")
    settings = Settings()
    assert [settings.resolved(s) for s in STAGES] == [CLOUD[s] for s in STAGES]


@pytest.mark.parametrize("stage", STAGES)
def test_explicit_embedded_wins_over_a_key(monkeypatch, stage):
    monkeypatch.setenv(KEY_VARS[stage][0], "secret-key")
    monkeypatch.setenv(f"AGENT_{stage.upper()}_PROVIDER", "embedded")
    assert Settings().resolved(stage) is Provider.EMBEDDED


@pytest.mark.parametrize("stage", STAGES)
def test_explicit_cloud_provider_is_kept(monkeypatch, stage):
    monkeypatch.setenv(KEY_VARS[stage][0], "secret-key")
    monkeypatch.setenv(f"AGENT_{stage.upper()}_PROVIDER", CLOUD[stage].value)
    assert Settings().resolved(stage) is CLOUD[stage]


@pytest.mark.parametrize("stage", STAGES)
def test_explicit_cloud_provider_without_its_key_fails_at_startup(monkeypatch, stage):
    from pydantic import ValidationError

    monkeypatch.setenv(f"AGENT_{stage.upper()}_PROVIDER", CLOUD[stage].value)
    with pytest.raises(ValidationError, match=KEY_VARS[stage][0]):
        Settings()


def test_openai_compatible_server_needs_no_key(monkeypatch):
    monkeypatch.setenv("AGENT_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AGENT_OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert Settings().resolved("llm") is Provider.OPENAI


@pytest.mark.parametrize("stage,foreign", [("llm", "deepgram"), ("stt", "elevenlabs"), ("tts", "openai")])
def test_another_stages_provider_is_rejected(monkeypatch, stage, foreign):
    from pydantic import ValidationError

    monkeypatch.setenv(f"AGENT_{stage.upper()}_PROVIDER", foreign)
    with pytest.raises(ValidationError, match="is not a"):
        Settings()


def test_unknown_provider_value_is_rejected(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("AGENT_LLM_PROVIDER", "anthropic")
    with pytest.raises(ValidationError):
        Settings()


def test_dotenv_in_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("OPENAI_API_KEY=from-dotenv\nAGENT_PORT=9999\n")
    settings = Settings()
    assert settings.port == 9999
    assert settings.openai_api_key.get_secret_value() == "from-dotenv"
    assert settings.resolved("llm") is Provider.OPENAI
    assert "from-dotenv" not in repr(settings)  # keys are secrets


def test_a_blank_line_from_env_example_means_the_default(tmp_path):
    # .env.example lines uncommented and left blank: defaults, not the working directory or an
    # empty JSON document.
    (tmp_path / ".env").write_text("AGENT_STORE_PATH=\nAGENT_DATA_DIR=  \nAGENT_PRICES=\nAGENT_GREETING=\n")
    settings, default = Settings(), Settings(_env_file=None)
    assert settings.records_path == default.records_path and settings.records_path.name == "sessions.sqlite3"
    assert settings.prices == default.prices
    assert settings.greeting == ""  # where empty means "off", it still does


def test_prices_that_are_not_json_are_refused_naming_the_setting(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("AGENT_PRICES", "{daily: 0.003}")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "prices" in str(refused.value)


# --- the service factory ----------------------------------------------------------------------


@pytest.fixture
def cloud_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-test")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "el-test")


def test_create_llm_builds_openai(cloud_env, monkeypatch):
    monkeypatch.setenv("AGENT_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("AGENT_OPENAI_MODEL", "my-model")
    monkeypatch.setenv("AGENT_LLM_TEMPERATURE", "0.7")
    monkeypatch.setenv("AGENT_SYSTEM_PROMPT", "Be terse.")
    llm = create_service(Settings(), "llm", EmbeddedEngines())
    assert type(llm) is OpenAILLMService
    assert str(llm._client.base_url).rstrip("/") == "http://127.0.0.1:9/v1"
    assert llm._client.api_key == "sk-openai-test"
    assert llm._settings.model == "my-model"
    assert llm._settings.temperature == 0.7
    assert llm._settings.system_instruction == "Be terse."


def test_create_llm_without_base_url_uses_openai(cloud_env):
    llm = create_service(Settings(), "llm", EmbeddedEngines())
    assert type(llm) is OpenAILLMService
    assert str(llm._client.base_url).startswith("https://api.openai.com")
    assert llm._settings.model == "gpt-4.1-mini"


def test_create_stt_builds_deepgram(cloud_env, monkeypatch):
    monkeypatch.setenv("AGENT_DEEPGRAM_MODEL", "nova-2")
    stt = create_service(Settings(), "stt", EmbeddedEngines())
    assert type(stt) is DeepgramSTTService
    assert stt._settings.model == "nova-2"


def test_create_tts_builds_elevenlabs_with_speakable_text(cloud_env, monkeypatch):
    monkeypatch.setenv("AGENT_ELEVENLABS_VOICE_ID", "voice-123")
    tts = create_service(Settings(), "tts", EmbeddedEngines())
    assert type(tts) is ElevenLabsTTSService
    assert tts._api_key == "el-test"
    assert tts._settings.voice == "voice-123"
    assert tts._settings.model == "eleven_flash_v2_5"
    assert tts._text_transforms == SPEAKABLE_TEXT


def test_factory_follows_each_stage_independently(monkeypatch):
    """Only the OpenAI key: the LLM is cloud, the (unloaded) embedded STT/TTS are not cloud."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    settings = Settings()
    assert type(create_service(settings, "llm", EmbeddedEngines())) is OpenAILLMService
    assert settings.resolved("stt") is Provider.EMBEDDED
    assert settings.resolved("tts") is Provider.EMBEDDED


def test_configuration_reference_and_env_example_are_generated_from_the_settings():
    """docs/configuration.md and .env.example are the Field descriptions, rendered; editing
    either by hand, or a setting without regenerating them, fails here."""
    from bot.settings_reference import COMMAND, ENV_EXAMPLE, REFERENCE, ROOT, generated

    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
    texts = generated()
    stale = [str(path.relative_to(ROOT)) for path in texts if path.read_text() != texts[path]]
    assert not stale, f"{', '.join(stale)} stale: run {COMMAND}"

    reference, example = REFERENCE.read_text(), ENV_EXAMPLE.read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variable = alias.choices[0] if alias else f"AGENT_{name.upper()}"
        assert f"| `{variable}` |" in reference, f"{variable} missing from docs/configuration.md"
        assert f"\n# {variable}=" in example, f"{variable} missing from .env.example"
