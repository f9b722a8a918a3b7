"""Scenario files: Pipecat's scripted-eval YAML, read by Pipecat's own parser.

A file holds `name:` and a `scenarios:` list; each scenario has `turns:` of `user:` text and
`expect:` events (`within_ms`, `text_contains`, `calls:` with `args`, `absent`, `send_after`
on a turn, ...): see `pipecat.evals.script`. `user: {modality: audio, speech: {...}}` makes a
scenario spoken (audio mode); without it the turns are typed (text mode). Judged `eval:`
criteria need a judge LLM and are not supported: every check here is deterministic.

Extensions (ignored by Pipecat's parser, read here):

- `tags: [ci, ...]` on a scenario or at the top of the file (a default, as Pipecat's top-level
  keys are): `--tag ci` selects the fast subset CI runs.
- `speech: {service: espeak-ng, voice: en-us+f3, speed: 165}` in an audio scenario's `user:`
  block: the offline voice its turns are spoken with (see `evals.audio_mode`).
- events `visualization` and the `failed` argument of `function_call_stopped`: see
  `evals.events`.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pipecat.evals.scenario import EvalScenarioFile
from pipecat.evals.script import EvalScriptScenario
from pipecat.utils.yaml import include_loader


@dataclass
class Scenario:
    script: EvalScriptScenario
    tags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.script.name

    @property
    def mode(self) -> str:
        return "audio" if self.script.user_audio else "text"


def _tags(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{where}: 'tags:' must be a list of strings")
    return value


def load_file(path: Path) -> list[Scenario]:
    loaded = EvalScenarioFile.load(path)
    with path.open() as f:
        raw = yaml.load(f, include_loader(path.parent))
    defaults = _tags(raw.get("tags"), str(path))
    entries = raw.get("scenarios") or [raw]
    scenarios = []
    for script, entry in zip(loaded.scenarios, entries, strict=True):
        if script.__class__ is not EvalScriptScenario:
            raise ValueError(f"{path}: {script.name}: only scripted scenarios (turns:) are supported")
        for turn in script.turns:
            for exp in turn.expect:
                if exp.eval is not None:
                    raise ValueError(
                        f"{path}: {script.name}: 'eval:' needs a judge LLM; use text_contains, "
                        "text_excludes or calls: instead"
                    )
        tags = _tags(entry.get("tags"), f"{path}: {script.name}") if "tags" in entry else defaults
        scenarios.append(Scenario(script=script, tags=tags))
    return scenarios


def discover(paths: list[Path]) -> list[Scenario]:
    """Every scenario in the given files and, recursively, the YAML files of given folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    scenarios = [s for f in files for s in load_file(f)]
    names = [s.name for s in scenarios]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate scenario names: {', '.join(duplicates)}")
    return scenarios


def select(scenarios: list[Scenario], *, names: list[str], tags: list[str], mode: str) -> list[Scenario]:
    """Scenarios whose name contains any of `names`, carrying any of `tags`, in `mode`."""
    return [
        s
        for s in scenarios
        if (not names or any(n in s.name for n in names))
        and (not tags or set(tags) & set(s.tags))
        and mode in ("all", s.mode)
    ]
