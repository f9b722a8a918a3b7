"""The run's report: JSON (everything) and Markdown (for people and docs/performance.md)."""

from collections import defaultdict
from typing import Any

from bot.percentiles import percentile

# Stage order in the tables: text mode's, then the server's turn milestones, then the client's.
STAGE_ORDER = (
    "first_output",
    "tool_calls",
    "first_answer_text",
    "answer_complete",
    "vad_stop",
    "turn_end",
    "llm_first_token",
    "tools_done",
    "tts_first_audio",
    "bot_audio_sent",
    "server_total",
    "voice_to_voice",
)


def latency_summary(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> stage -> {n, p50, p90, p95, max} in seconds, over every turn of every scenario."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        for turn in result["latency"]:
            for stage, seconds in turn.items():
                values[result["mode"]][stage].append(seconds)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for mode, stages in sorted(values.items()):
        ordered = sorted(stages, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99)
        summary[mode] = {
            stage: {
                "n": len(stages[stage]),
                **{f"p{q}": round(percentile(stages[stage], q), 3) for q in (50, 90, 95)},
                "max": round(max(stages[stage]), 3),
            }
            for stage in ordered
        }
    return summary


def build(
    results: list[dict[str, Any]],
    *,
    routing: dict[str, Any] | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    passed = sum(r["passed"] for r in results)
    expectations = [e for r in results for t in r["turns"] for e in t["expectations"]]
    return {
        "meta": meta,
        "summary": {
            "scenarios": len(results),
            "passed": passed,
            "failed": len(results) - passed,
            "expectations": len(expectations),
            "expectations_passed": sum(e["status"] == "passed" for e in expectations),
        },
        "latency": latency_summary(results),
        "routing": routing,
        "scenarios": results,
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    s, meta = report["summary"], report["meta"]
    lines = [
        "# Eval report",
        "",
        f"`{meta['command']}`  ",
        f"{meta['started']}, {meta['wall_s']} s, providers: "
        + ", ".join(f"{k} `{v}`" for k, v in meta["providers"].items()),
        "",
        f"**{s['passed']}/{s['scenarios']} scenarios passed**, "
        f"{s['expectations_passed']}/{s['expectations']} expectations.",
        "",
        "| Scenario | Mode | Result | Time | Why it failed |",
        "|---|---|---|---|---|",
    ]
    for r in report["scenarios"]:
        why = "; ".join(f"turn {f['turn']} `{f['event']}`: {f['reason']}" for f in r["failures"])
        verdict = "pass" if r["passed"] else "**FAIL**"
        lines.append(f"| {_cell(r['name'])} | {r['mode']} | {verdict} | {r['duration_s']} s | {_cell(why)} |")
    routing = report.get("routing")
    if routing:
        lines += ["", "## Tool routing", ""]
        if routing.get("skipped"):
            lines.append(f"Skipped: {routing['skipped']}")
        else:
            lines += [
                f"`{routing['set']}`, {routing['items']} items, model `{routing['model']}`, {routing['wall_s']} s.",
                "",
                "| Split | Tool choice | Arguments |",
                "|---|---|---|",
            ]
            summary = routing["summary"]
            for split, f in summary["splits"].items():
                args = summary["arguments"].get(split)
                arg_text = f"{args['correct']}/{args['n']} ({args['accuracy']:.1%})" if args else "-"
                lines.append(f"| {split} | {f['correct']}/{f['n']} ({f['accuracy']:.1%}) | {arg_text} |")
            o = summary["overall"]
            lines.append(f"| **all** | **{o['correct']}/{o['n']} ({o['accuracy']:.1%})** | |")
            classes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for per_split in summary["classes"].values():
                for cls, f in per_split.items():
                    classes[cls][0] += f["correct"]
                    classes[cls][1] += f["n"]
            lines += ["", "Per class: " + ", ".join(f"{c} {k}/{n}" for c, (k, n) in classes.items())]
    for mode, stages in report["latency"].items():
        lines += [
            "",
            f"## Latency, {mode} mode (seconds, every turn)",
            "",
            "| Stage | n | p50 | p90 | p95 | max |",
            "|---|---|---|---|---|---|",
        ]
        for stage, f in stages.items():
            lines.append(f"| {stage} | {f['n']} | {f['p50']} | {f['p90']} | {f['p95']} | {f['max']} |")
    return "\n".join(lines) + "\n"
