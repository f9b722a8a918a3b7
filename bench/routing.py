"""Tool-routing accuracy of the embedded LLM on the routing set (`evals/routing_set.json`).

Each item is one user turn (with an optional short history) run through the embedded model
exactly as the product runs it: `build_request` on an `LLMContext` with
`ToolsSchema(ALL_TOOLS)`, the settings' system prompt and temperature, the engine's stream,
and `ReplyDecoder(prefill=REPLY_PREFILL)` on what it generates. No server is needed.

The tool choice is the decoder's verdict: "none" for an answer, else the first call's tool
(a reply that chains more calls with "then" is judged by its first one; the chain is kept in
the --json output). An answer is stopped once its first words are decoded (the routing
decision is made by then); a tool call runs to its end, for its arguments. Arguments are
checked only for the keys an item names: strings ignoring case, sentence punctuation and extra
spaces, numbers (also inside lists) to within 1e-6, and `{"one_of": [...]}` any listed value.

Prints the accuracy of the tool choice per split (tune, held_out) and per class, argument
accuracy, every miss, and the time per decision (to the first token that fixes the route)
and per finished tool call.

    .venv/bin/python -m bench.routing                      # the whole set, one pass
    .venv/bin/python -m bench.routing --split held_out --json /tmp/routing.json
"""

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.providers.llama.engine import LocalLLMEngine
from bot.providers.llama.service import build_request
from bot.providers.llama.weights import ensure_model_file
from bot.providers.tool_routing import NO_TOOL, REPLY_PREFILL, ReplyDecoder
from bot.settings import Settings
from bot.tools import ALL_TOOLS

SET_PATH = Path(__file__).resolve().parent.parent / "evals" / "routing_set.json"
SPLITS = ("tune", "held_out")
ANSWER_PREVIEW_CHARS = 40  # of a (wrong) answer, kept for the miss list, then generation stops
INVALID = "<invalid>"  # a tool call that did not finish as JSON (e.g. ran out of tokens)


def load_set(path: Path = SET_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


_PUNCTUATION = str.maketrans("", "", ".,!?;:'\"\u2018\u2019\u201c\u201d")


def _text(value: str) -> str:
    """A string as compared: case, sentence punctuation and extra spaces ignored."""
    return " ".join(value.casefold().translate(_PUNCTUATION).split())


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and set(expected) == {"one_of"}:
        return any(_same(option, actual) for option in expected["one_of"])
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(expected - actual) <= 1e-6
    if isinstance(expected, str) and isinstance(actual, str):
        return _text(expected) == _text(actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    return expected == actual


def arguments_match(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    return all(key in actual and _same(value, actual[key]) for key, value in expected.items())


async def route(engine: LocalLLMEngine, settings: Settings, item: dict[str, Any]) -> dict[str, Any]:
    """One item through the product's request path; its chosen tool, arguments and timings."""
    messages = [*item.get("history", []), {"role": "user", "content": item["text"]}]
    context = LLMContext(messages=messages, tools=ToolsSchema(ALL_TOOLS))
    request = build_request(
        context,
        system_prompt=settings.system_prompt,
        max_tokens=settings.llm_max_answer_tokens,
        temperature=settings.llm_temperature,
        context_tokens=engine.context_tokens_per_slot,
    )
    decoder = ReplyDecoder(prefill=REPLY_PREFILL)
    cancelled = threading.Event()
    answer, decided_at = "", None
    started = time.monotonic()
    async for chunk in engine.stream_chat(request, cancelled):
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if not piece:
                continue
            answer += decoder.feed(piece)
            if decided_at is None and (decoder.is_answer or decoder.is_tool_call):
                decided_at = time.monotonic()
            if decoder.is_answer and (len(answer) >= ANSWER_PREVIEW_CHARS or decoder.answer_complete):
                cancelled.set()  # the route is known; the rest of the answer is not judged
    finished = time.monotonic()
    result: dict[str, Any] = {
        "decision_s": round((decided_at or finished) - started, 3),
        "total_s": round(finished - started, 3),
    }
    if decoder.is_answer:
        result.update(chosen=NO_TOOL, answer=answer)
    else:
        try:
            calls = decoder.tool_calls()
        except ValueError as e:
            result.update(chosen=INVALID, error=str(e)[:200])
        else:
            result.update(
                chosen=calls[0][0],
                arguments=calls[0][1],
                calls=[{"tool": n, "arguments": a} for n, a in calls],
            )
    return result


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def accuracy(subset: list[dict]) -> dict[str, Any]:
        right = sum(r["correct"] for r in subset)
        return {"n": len(subset), "correct": right, "accuracy": round(right / len(subset), 3) if subset else None}

    summary: dict[str, Any] = {"overall": accuracy(rows), "splits": {}, "classes": {}}
    for split in SPLITS:
        if in_split := [r for r in rows if r["split"] == split]:
            summary["splits"][split] = accuracy(in_split)
            by_class: dict[str, list] = defaultdict(list)
            for r in in_split:
                by_class[r["tool"]].append(r)
            summary["classes"][split] = {c: accuracy(rs) for c, rs in sorted(by_class.items())}
    with_args = [r for r in rows if r.get("arguments_ok") is not None]
    summary["arguments"] = {
        split: {
            "n": len(subset),
            "correct": sum(r["arguments_ok"] for r in subset),
            "accuracy": round(sum(r["arguments_ok"] for r in subset) / len(subset), 3),
        }
        for split in SPLITS
        if (subset := [r for r in with_args if r["split"] == split])
    }
    decisions = [r["decision_s"] for r in rows]
    calls = [r["total_s"] for r in rows if r["chosen"] not in (NO_TOOL, INVALID)]
    summary["p50_decision_s"] = round(statistics.median(decisions), 3) if decisions else None
    summary["p50_tool_call_s"] = round(statistics.median(calls), 3) if calls else None
    return summary


def print_report(summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print("\nTool choice accuracy")
    for split, figures in summary["splits"].items():
        print(f"  {split:9s} {figures['correct']:3d}/{figures['n']:<3d} {figures['accuracy']:.1%}")
        for cls, f in summary["classes"][split].items():
            print(f"      {cls:20s} {f['correct']:3d}/{f['n']:<3d} {f['accuracy']:.1%}")
    print("Argument accuracy (items that name arguments, counted whether or not the tool was right)")
    for split, f in summary["arguments"].items():
        print(f"  {split:9s} {f['correct']:3d}/{f['n']:<3d} {f['accuracy']:.1%}")
    misses = [r for r in rows if not r["correct"] or r.get("arguments_ok") is False]
    print(f"Misses ({len(misses)})")
    for r in misses:
        got = r["chosen"]
        if r["chosen"] == NO_TOOL:
            got += f" ({r.get('answer', '')!r})"
        elif r["chosen"] == INVALID:
            got += f" ({r.get('error', '')})"
        else:
            got += " " + json.dumps(r.get("arguments"))
            if len(r.get("calls", [])) > 1:
                got += f" then {[c['tool'] for c in r['calls'][1:]]}"
        wanted = r["tool"] + (" " + json.dumps(r["expected_arguments"]) if r["expected_arguments"] else "")
        print(f"  [{r['split']}] {r['id']}: {r['text']!r}\n      want {wanted}\n      got  {got}")
    print(
        f"p50 decision {summary['p50_decision_s']}s, p50 finished tool call"
        f" {summary['p50_tool_call_s']}s, {summary['wall_s']}s for {len(rows)} items"
        f" (model {summary['model']}, {summary['threads']} threads)"
    )


async def run(
    items: list[dict[str, Any]],
    settings: Settings,
    *,
    engine: LocalLLMEngine | None = None,
    on_item: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Route every item; `engine` reuses a loaded model (the evals' own), `on_item(i, n, row)`
    replaces the per-item line printed here."""
    engine = engine or LocalLLMEngine(
        ensure_model_file(settings.llm_model, settings.data_dir),
        threads=settings.llm_threads,
        context_tokens_per_slot=settings.llm_context_tokens,
        parallel_slots=1,  # one item at a time; a slot's window is the product's
    )
    rows = []
    for i, item in enumerate(items, 1):
        result = await route(engine, settings, item)
        expected = item.get("arguments") or {}
        row = {
            "id": item["id"],
            "split": item["split"],
            "text": item["text"],
            "tool": item["tool"],
            "expected_arguments": expected,
            "correct": result["chosen"] == item["tool"],
            "arguments_ok": (
                arguments_match(expected, result.get("arguments") or {})
                if expected and result["chosen"] == item["tool"]
                else (False if expected else None)
            ),
            **result,
        }
        rows.append(row)
        if on_item is not None:
            on_item(i, len(items), row)
            continue
        mark = "ok " if row["correct"] and row["arguments_ok"] is not False else "MISS"
        print(
            f"{i:3d}/{len(items)} {mark} {item['id']:14s} -> {result['chosen']} {result['decision_s']:.2f}s", flush=True
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=SET_PATH, help="the routing set (JSON)")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    parser.add_argument("--limit", type=int, help="only the first N items (after --split)")
    parser.add_argument("--json", type=Path, help="also write the summary and every row here")
    args = parser.parse_args()

    items = load_set(args.set)["items"]
    if args.split != "all":
        items = [i for i in items if i["split"] == args.split]
    if args.limit:
        items = items[: args.limit]
    settings = Settings()
    started = time.monotonic()
    rows = asyncio.run(run(items, settings))
    summary = summarize(rows)
    summary.update(
        wall_s=round(time.monotonic() - started, 1),
        model=settings.llm_model,
        threads=settings.llm_threads,
        tools=[t.__name__ for t in ALL_TOOLS],
    )
    print_report(summary, rows)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
