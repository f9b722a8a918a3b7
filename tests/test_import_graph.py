"""The import rules of docs/architecture.md ("Which way imports run"), read from the source: each
module of `bot/` sits on a layer and imports only from its own layer or the ones below, with no
cycle; tools, processors and services do not import each other; nothing in the project imports
`server.py`; no package edits `sys.path` to find another."""

import ast
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.unit

# The provider rooms (and what they share) sit below the registry, `bot/providers/__init__.py`.
ROOM_NAMES = sorted(
    path.stem
    for path in (ROOT / "bot" / "providers").iterdir()
    if path.name not in ("__init__.py", "__pycache__") and (path.suffix == ".py" or path.is_dir())
)
# Lowest first. A module's layer is that of the longest prefix listed here.
LAYERS = [
    # the floor
    (
        "bot.settings",
        "bot.costs",
        "bot.records",
        "bot.frames",
        "bot.audio_rates",
        "bot.percentiles",
        "bot.conversation",
        "bot.routing_hints",
        "bot.pipecat_internals",
    ),
    # the parts every session shares or leaves behind, and the guards around them
    (
        "bot.turn_models",
        "bot.store",
        "bot.telemetry",
        "bot.report",
        "bot.session_resources",
        "bot.limits",
        "bot.auth",
        "bot.request_guards",
    ),
    # the pipeline's parts
    (
        "bot.processors",
        "bot.observers",
        "bot.transports",
        "bot.tools",
        *(f"bot.providers.{room}" for room in ROOM_NAMES),
    ),
    # settings -> services and engines: the registry of provider rooms
    ("bot.providers",),
    ("bot.pipeline",),
    ("bot.sessions",),
    ("bot.cli", "bot.settings_reference", "bot.__main__", "bot.logs"),
]
# Rooms of one layer that share nothing directly: what two of them need lives on the floor.
STRANGERS = ("bot.tools", "bot.processors", "bot.providers.")  # the rooms, not their registry


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    paths = [ROOT / "server.py", *ROOT.glob("bot/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("evals/**/*.py")]
    paths += [*ROOT.glob("client/**/*.py"), *ROOT.glob("tests/**/*.py")]
    return {_module_name(path): path for path in paths}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, at any depth of its code (imports inside functions
    count: they run too)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {candidate for candidate in candidates if candidate in known and candidate != name}
    return found


GRAPH = {name: _imports(name, path, set(_project_modules())) for name, path in _project_modules().items()}


def _layer(name: str) -> int:
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert matches, f"{name} is on no layer: add it to LAYERS (and to docs/architecture.md)"
    return max(matches)[1]


def _room(name: str) -> str | None:
    return next((room for room in STRANGERS if name.startswith(room.rstrip(".") + ".") or name == room), None)


def test_every_module_of_the_package_is_on_a_layer():
    for name in GRAPH:
        if name.startswith("bot."):
            _layer(name)


def test_no_module_of_the_package_imports_a_layer_above_its_own():
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in GRAPH.items()
        if name.startswith("bot.")
        for target in targets
        if target.startswith("bot.") and _layer(target) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_tools_processors_and_services_do_not_import_each_other():
    crossing = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if _room(name) and _room(target) and _room(name) != _room(target)
    ]
    assert not crossing, "\n".join(crossing)


# In a provider's room, what loads and runs the model knows nothing of Pipecat's services.
ENGINE_PARTS = ("engine", "voice", "conversion", "weights", "model")
SERVICE_PARTS = ("service", "services", "routed", "tool_routing")


def test_engines_do_not_import_services():
    reaching = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("bot.providers.") and name.rsplit(".", 1)[-1] in ENGINE_PARTS
        for target in targets
        if target.rsplit(".", 1)[-1] in SERVICE_PARTS
    ]
    assert not reaching, "\n".join(reaching)


def test_nothing_imports_the_server():
    importers = sorted(name for name, targets in GRAPH.items() if "server" in targets)
    assert not importers, f"server.py is the top: {importers} import it"


def test_there_is_no_import_cycle():
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in GRAPH[name]:
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while (member := stack.pop()) != name:
                component.append(member)
            if component:
                cycles.append(sorted([name, *component]))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert not cycles, cycles


def test_no_package_edits_sys_path_to_import_another():
    editing = [
        name
        for name, path in _project_modules().items()
        if not name.startswith("tests") and "sys.path" in path.read_text()
    ]
    assert not editing, f"these modules edit sys.path: {editing}"


def test_the_rules_see_a_violation():
    """The graph is read right: known edges are in it (an empty graph would pass every rule)."""
    assert "bot.pipeline" in GRAPH["bot.sessions"]
    assert "bot.conversation" in GRAPH["bot.routing_hints"]
    assert "bench.provenance" in GRAPH["bench.latency"]
    assert _layer("bot.providers") > _layer("bot.providers.llama.service")
    assert "bot.providers.moonshine.conversion" in GRAPH["bot.providers.moonshine.engine"]
