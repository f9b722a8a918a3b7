"""The embedded LLM's weights: found through the packages' metadata without running their
code, and a cached file trusted only while it is the very file that was verified."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from bot.providers.llama.weights import MODELS, _still_verified
from client.server_process import ROOT


@pytest.mark.e2e
def test_the_weight_chunks_are_found_without_importing_their_packages():
    probe = (
        "import sys; from bot.providers.llama.weights import MODELS, _chunk_files;"
        "files = _chunk_files(MODELS['qwen2.5-coder-0.5b']);"
        "print(len(files), all(f.is_file() for f in files),"
        " [m for m in sys.modules if m.startswith('pandas_sns')])"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().split(maxsplit=2) == ["6", "True", "[]"], done.stderr[-2000:]


def _verify(path, sha256: str):
    record = path.with_suffix(".verified.json")
    stat = path.stat()
    record.write_text(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return record


@pytest.mark.unit
def test_a_cached_file_is_trusted_only_while_it_is_the_file_verified(tmp_path):
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF" + bytes(1000))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    record = _verify(weights, sha)
    assert _still_verified(weights, record, sha)
    assert not _still_verified(weights, record, MODELS["qwen2.5-coder-0.5b"].sha256)  # not the pinned one

    # A 21-byte fake swapped in under the same name, beside the old record: not trusted.
    fake = tmp_path / "fake"
    fake.write_bytes(b"GGUF fake weights 21b")
    os.replace(fake, weights)
    assert not _still_verified(weights, record, sha)
    # Rewritten in place with the same size: its modification time gives it away.
    weights.write_bytes(b"GGUF" + bytes(1000))
    os.utime(weights, ns=(1, 1))
    assert not _still_verified(weights, record, sha)
    record.write_text("a marker holding only the hash " + sha)
    assert not _still_verified(weights, record, sha)
