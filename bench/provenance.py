"""Where a benchmark's result came from, so a figure in the docs can be traced to its file."""

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def provenance() -> dict:
    """The date (UTC), the commit and the machine a result was measured on."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": done.stdout.strip() or "unknown",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def result_path(benchmark: str, commit: str) -> Path:
    """bench/results/<benchmark>-<local date and time>-<commit>.json"""
    return RESULTS / f"{benchmark}-{datetime.now():%Y%m%d-%H%M}-{commit}.json"
