"""Writes the configuration reference, `docs/configuration.md`, and `.env.example` from
`bot.settings.Settings`.

A setting is documented in one place, its Field `description`; these two files are generated
from it so that they cannot drift apart from the code or from each other. Run
`.venv/bin/python -m bot.settings_reference` after changing a setting; `--check` only reports
stale files (exit status 1), and `tests/test_settings.py` fails on them too.
"""

import argparse
import sys
import textwrap
from enum import Enum
from pathlib import Path

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
COMMAND = ".venv/bin/python -m bot.settings_reference"
WIDTH = 95  # of the prose lines in both files

# The sections both files are split into, in field order: (title, its first field, an optional
# sentence on the whole section). A field belongs to the last section started before it.
SECTIONS = [
    ("Server", "host", ""),
    ("Session records and shutdown", "store_path", ""),
    ("Limits", "max_sessions", ""),
    ("Access", "api_key", ""),
    (
        "Provider per stage",
        "stt_provider",
        "`auto` picks the stage's cloud provider when its key is set, the embedded engine"
        " otherwise; stacks mix freely. A provider that does not belong to its stage, or a cloud"
        " provider named without its key, stops the server at startup with a message naming the"
        " variable.",
    ),
    (
        "Benchmark providers",
        "benchmark_stt_delay_ms",
        "Fixed-delay stand-ins (`bot/providers/benchmark/services.py`) to measure what the server itself"
        " adds; never the default and never chosen by `auto`.",
    ),
    ("Embedded LLM", "llm_model", ""),
    ("Embedded STT and TTS", "stt_threads", ""),
    ("Turn taking", "vad_stop_secs", ""),
    (
        "Failed turns",
        "apology",
        "A turn that fails or stalls is answered with an apology and the session goes on"
        " (`bot/processors/fault_recovery.py`).",
    ),
    (
        "Cloud providers and Daily rooms",
        "openai_api_key",
        "Pipecat's own service classes, created by their rooms in `bot/providers/`.",
    ),
    ("Assistant", "system_prompt", ""),
]

INTRO = """\
Settings come from the environment or a `.env` file in the working directory, read once at
startup with pydantic-settings; `.env.example` lists every variable with its default.
Non-secret settings carry the `AGENT_` prefix; provider keys keep the names their providers
document (`OPENAI_API_KEY`, ...). Each stage's provider is `auto` by default: the cloud service
when its key is set, the embedded engine otherwise. A value that is not valid stops the server
at startup."""

ENV_HEADER = f"""\
# Every setting the server reads, with its default. Copy to .env and edit what you need;
# unset cloud keys leave each stage on the embedded offline stack.
# Generated from the Field descriptions in bot/settings.py: edit those, then run
# `{COMMAND}`."""


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a field is read from (the first, for a key with two names)."""
    alias = field.validation_alias
    if alias is None:
        return f"{Settings.model_config['env_prefix']}{name.upper()}"
    first = alias.choices[0] if isinstance(alias, AliasChoices) else alias
    if not isinstance(first, str):
        raise TypeError(f"{name}: an AliasPath names no environment variable")
    return first


def description(name: str, field: FieldInfo) -> str:
    """A field's description: every setting has one, as its only documentation."""
    if field.description is None:
        raise ValueError(f"{name}: describe the setting in its Field")
    return field.description


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in `.env`; empty for none, and for a nested model
    (the price table), which the description explains."""
    value = field.get_default(call_default_factory=True)
    if value is None or isinstance(value, BaseModel) or value in ("", (), []):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return str(Path("~") / value.relative_to(Path.home()))
    return str(value)


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, never breaking a word (a URL, a JSON example)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


def sections() -> list[tuple[str, str, list[tuple[str, FieldInfo]]]]:
    """(title, sentence, [(field name, field)]) in field order; fails on a stale SECTIONS."""
    fields = list(Settings.model_fields.items())
    names = [name for name, _ in fields]
    starts = [names.index(first) for _, first, _ in SECTIONS]  # ValueError: a renamed field
    if starts[0] != 0 or starts != sorted(starts):
        raise ValueError("SECTIONS must start at the first field and follow the field order")
    ends = starts[1:] + [len(fields)]
    return [(title, sentence, fields[start:end]) for (title, _, sentence), start, end in zip(SECTIONS, starts, ends)]


def reference_markdown() -> str:
    """The text of docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from the Field descriptions in bot/settings.py: edit those, then run",
        f"`{COMMAND}`. -->",
        "",
        INTRO,
    ]
    for title, sentence, fields in sections():
        lines += ["", f"## {title}", ""]
        if sentence:
            lines += [*wrap(sentence, WIDTH), ""]
        lines += ["| Variable | Default | Meaning |", "|---|---|---|"]
        for name, field in fields:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                shown = "*(built in, see meaning)*"
            else:
                shown = f"`{text}`" if (text := default_text(field)) else "*(none)*"
            row = [f"`{variable(name, field)}`", shown, description(name, field)]
            if any("|" in cell for cell in row):
                raise ValueError(f"{name}: a '|' would break the table; reword the description")
            lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines) + "\n"


def env_example() -> str:
    """The text of .env.example: every variable commented out at its default."""
    lines = [ENV_HEADER]
    for title, sentence, fields in sections():
        lines += ["", f"# --- {title} ---"]
        lines += [f"# {line}" for line in wrap(sentence, WIDTH - 2)]
        for name, field in fields:
            lines.append("")
            lines += [f"# {line}" for line in wrap(description(name, field), WIDTH - 2)]
            lines.append(f"# {variable(name, field)}={default_text(field)}")
    return "\n".join(lines) + "\n"


def generated() -> dict[Path, str]:
    return {REFERENCE: reference_markdown(), ENV_EXAMPLE: env_example()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/configuration.md and .env.example from bot/settings.py.")
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    args = parser.parse_args(argv)
    stale = {path: text for path, text in generated().items() if not path.exists() or path.read_text() != text}
    names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
    if args.check:
        if stale:
            print(f"stale: {names}; run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    for path, text in stale.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {names}" if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
