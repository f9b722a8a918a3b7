"""The eval runner, through its CLI: verdicts, reasons and exit codes on scenarios whose outcome
does not depend on the model, then the CI subset of `evals/` against the real stack."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

SCENARIOS = """
name: runner
scenarios:
  - name: passing
    turns:
      - user: "Hello there."
        expect:
          - event: llm_started
          - event: response
  - name: deliberately_failing
    turns:
      - user: "Hello again."
        expect:
          # Every typed turn starts the LLM, so this absence fails as soon as it does.
          - event: llm_started
            absent: true
            within_ms: 20000
          - event: response
"""


def run_cli(*args: str, timeout: float = 600) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-m", "evals", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return process.returncode, process.stdout + process.stderr


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenarios")
    (folder / "runner.yaml").write_text(SCENARIOS)
    return folder


@pytest.mark.e2e
def test_failing_scenario_fails_the_run_with_its_reason(scenario_dir, tmp_path):
    code, output = run_cli(
        str(scenario_dir), "--no-routing", "--stack", "embedded", "--out", str(tmp_path), timeout=280
    )
    assert code == 1, output
    report = json.loads((tmp_path / "report.json").read_text())
    verdicts = {s["name"]: s for s in report["scenarios"]}
    assert verdicts["runner/passing"]["passed"] is True
    assert [e["status"] for e in verdicts["runner/passing"]["turns"][0]["expectations"]] == [
        "passed",
        "passed",
    ]
    failing = verdicts["runner/deliberately_failing"]
    assert failing["passed"] is False
    first, second = failing["turns"][0]["expectations"]
    assert first["status"] == "failed" and first["kind"] == "unexpected_event", first
    assert "expected no 'llm_started'" in first["reason"]
    assert second["status"] == "passed"  # as in Pipecat, only a timeout ends a turn's matching
    assert failing["debug_log"], "a failed scenario keeps its trace"
    assert report["summary"] == {"scenarios": 2, "passed": 1, "failed": 1, "expectations": 4, "expectations_passed": 3}
    assert report["routing"] is None
    assert report["latency"]["text"]["first_output"]["n"] == 2
    markdown = (tmp_path / "report.md").read_text()
    assert "| runner/deliberately_failing | text | **FAIL** |" in markdown
    assert "expected no 'llm_started'" in markdown


@pytest.mark.e2e
def test_passing_run_exits_zero(scenario_dir, tmp_path):
    code, output = run_cli(
        str(scenario_dir), "-k", "passing", "--stack", "embedded", "--out", str(tmp_path), timeout=280
    )
    assert code == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [s["name"] for s in report["scenarios"]] == ["runner/passing"]
    assert report["summary"]["failed"] == 0


@pytest.mark.e2e
def test_bad_scenario_file_exits_two(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscenarios:\n  - name: no_turns\n    expect: []\n")
    code, output = run_cli(str(bad), "--out", str(tmp_path / "out"), timeout=120)
    assert code == 2, output
    assert "turns" in output


@pytest.mark.e2e
def test_scenario_set_covers_the_issue(tmp_path):
    code, output = run_cli("evals/", "--list", timeout=120)
    assert code == 0, output
    names = [line.split()[0] for line in output.splitlines() if "/" in line and "(" in line]
    assert len(names) >= 25, names
    assert any("(audio)" in line for line in output.splitlines())


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_ci_subset_passes(tmp_path):
    """The fast subset (typed scenarios and one spoken one) against the embedded stack."""
    code, output = run_cli("evals/", "--tag", "ci", "--stack", "embedded", "--out", str(tmp_path), timeout=840)
    report = json.loads((tmp_path / "report.json").read_text())
    failed = [(s["name"], s["failures"]) for s in report["scenarios"] if not s["passed"]]
    assert code == 0 and not failed, f"{failed}\n{output[-3000:]}"
    assert {s["mode"] for s in report["scenarios"]} == {"text", "audio"}
    assert report["latency"]["audio"]["voice_to_voice"]["n"] >= 1


@pytest.mark.unit
def test_dictated_scenarios_speak_with_pauses_in_several_voices():
    from evals.audio_mode import user_voice
    from evals.scenarios import load_file

    scenarios = load_file(ROOT / "evals" / "scenarios" / "dictated.yaml")
    assert len(scenarios) >= 12
    assert all(s.mode == "audio" and s.script.turns[0].parts for s in scenarios)
    voices = {user_voice(s.script.user_speech or {}) for s in scenarios}
    assert len({v.speaker for v in voices}) >= 3 and len(voices) >= 6, voices


@pytest.mark.unit
def test_spoken_scenarios_use_the_tuning_voices_and_never_the_held_out_one():
    from client.speech import HELD_OUT, VOICES
    from evals.audio_mode import user_voice
    from evals.scenarios import load_file

    spoken = [
        s
        for path in sorted((ROOT / "evals" / "scenarios").glob("*.yaml"))
        for s in load_file(path)
        if s.mode == "audio"
    ]
    voices = {user_voice(s.script.user_speech or {}) for s in spoken}
    assert len({v.speaker for v in voices}) >= 3 and len(voices) >= 6, voices
    held_out = {VOICES[name].speaker for name in HELD_OUT}
    assert not {v.speaker for v in voices} & held_out, voices
    undictated = {user_voice(s.script.user_speech or {}) for s in spoken if not s.script.turns[0].parts}
    assert len(undictated) >= 4, undictated  # the older spoken scenarios are not all one voice


@pytest.mark.unit
def test_a_pictures_event_says_what_it_shows():
    """A chart's values and the words a sentiment reading scored, for `text_contains`."""
    from evals.events import visualization_event

    chart = {
        "visualization": {
            "type": "chart",
            "chart_type": "bar",
            "title": "Monthly sales",
            "figure": {"data": [{"type": "bar", "y": [10.0, 20.0, 30.5]}]},
        }
    }
    assert visualization_event(chart)["text"] == "chart bar: Monthly sales | 10, 20, 30.5"
    sentiment = {
        "visualization": {
            "type": "sentiment",
            "title": "Sentiment",
            "text": "I love my new job",
            "figure": {"data": [{"type": "bar", "y": [0.5]}]},
        }
    }
    assert visualization_event(sentiment)["text"] == "sentiment bar: Sentiment | I love my new job"
