"""The standing fuzz campaign against the server's own API description (`/openapi.json`).

Starts the server twice (without an API key and with one, the benchmark providers in place of
the models) and runs schemathesis against each with every check but one: no 5xx, every status
and body as documented, no undocumented method answered, every refusal a documented one, and
with a key, that nothing is served without it. Left out: `positive_data_acceptance`, which
expects every schema-valid body to be accepted; no JSON Schema can say which SDP text aiortc
can use, so a schema-valid offer may still be a 400 naming why.

    .venv/bin/python -m bench.fuzz                       # the full campaign
    .venv/bin/python -m bench.fuzz --max-examples 5      # the CI subset (tests/test_fuzz.py)

The summary (cases, failures per run, date, commit, machine) is printed as JSON and written to
`--out` (default bench/results/fuzz-<date>-<commit>.json). Exit status 0 when no run found a failure.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.provenance import provenance, result_path
from client.server_process import start_server, stop_server

FUZZ_KEY = "fuzz-campaign-key-0123456789"
BENCHMARK_STACK = {f"AGENT_{stage}_PROVIDER": "benchmark" for stage in ("STT", "LLM", "TTS")}
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
_CASES = re.compile(r"(\d+) generated(?:, \d+ found (\d+) unique failure)?")


def run_campaign(url: str, *, key: str | None, max_examples: int, seed: int) -> dict:
    """One schemathesis run against a live server: its cases, failures and output tail."""
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--no-color",
    ]
    if key:
        command += ["--header", f"Authorization: Bearer {key}"]
    # In a folder of its own: schemathesis keeps a cache where it runs.
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tempfile.mkdtemp())
    cases = failures = None
    for line in done.stdout.splitlines():
        if match := _CASES.search(line):
            cases, failures = int(match[1]), int(match[2] or 0)
    return {
        "auth": "api key" if key else "none",
        "cases": cases,
        "unique_failures": failures,
        "exit_status": done.returncode,
        "output_tail": done.stdout[-4000:] if done.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="where to write the JSON summary")
    args = parser.parse_args(argv)

    runs = []
    for key in (None, FUZZ_KEY):
        log = Path(tempfile.mkdtemp()) / "server.log"
        env = {**BENCHMARK_STACK, **({"AGENT_API_KEY": key} if key else {})}
        process, url = start_server(log, **env)
        try:
            runs.append(run_campaign(url, key=key, max_examples=args.max_examples, seed=args.seed))
        finally:
            stop_server(process)
        if "Traceback" in log.read_text(errors="replace"):
            runs[-1]["server_tracebacks"] = log.read_text(errors="replace").count("Traceback")
    summary = {
        "benchmark": "fuzz",
        **provenance(),
        "max_examples": args.max_examples,
        "seed": args.seed,
        "runs": runs,
    }
    out = args.out or result_path("fuzz", summary["commit"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    clean = all(r["exit_status"] == 0 and not r.get("server_tracebacks") for r in runs)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
