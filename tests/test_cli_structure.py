"""The CLI's layout: one module per command over a shared run-folder module and one registry of model families,
with no import cycle among the modules of `scoreflow/_cli` (imports inside functions included)."""

import ast
import os
import subprocess
import sys

import scoreflow._cli as cli_package


CLI = os.path.dirname(cli_package.__file__)
PACKAGE = "scoreflow._cli"


def _modules() -> list[str]:
    return sorted(n[:-3] for n in os.listdir(CLI) if n.endswith(".py") and n != "__init__.py")


def _imports(name: str) -> set[str]:
    """The modules of scoreflow/_cli that module `name` imports, anywhere in its source."""
    tree = ast.parse(open(os.path.join(CLI, name + ".py")).read())
    mods = set(_modules())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                if node.module is None:
                    out |= {a.name for a in node.names if a.name in mods}
                else:
                    out.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith(PACKAGE + "."):
                out.add(node.module[len(PACKAGE) + 1 :].split(".")[0])
            elif node.level == 0 and node.module == PACKAGE:
                out |= {a.name for a in node.names if a.name in mods}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PACKAGE + "."):
                    out.add(a.name[len(PACKAGE) + 1 :].split(".")[0])
    return out & mods


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_and_layering():
    graph = {m: _imports(m) for m in _modules()}
    assert _cycle(graph) is None, _cycle(graph)
    # the commands and the run folder know no family; the families know no command; only main assembles
    families = {"continuous", "d3pm", "distilled", "nce"}
    commands = {"train", "sample", "nll", "info", "distill"}
    for m in commands | {"run", "session", "registry", "options"}:
        assert not graph[m] & families, (m, graph[m])
    for m in families:
        assert not graph[m] & (commands | {"main"}), (m, graph[m])
    assert graph["main"] >= families | commands


def test_each_module_imports_first():
    # each module imported on its own first (the package's other modules not yet loaded) works
    code = (
        "import importlib, sys\n"
        "import scoreflow\n"
        f"for m in {_modules()!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('scoreflow._cli')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module('scoreflow._cli.' + m)\n"
        # the default --model does not depend on which family module was imported first
        "for k in [k for k in sys.modules if k.startswith('scoreflow._cli')]:\n"
        "    del sys.modules[k]\n"
        "import scoreflow._cli.d3pm\n"
        "from scoreflow._cli import main, registry\n"
        "assert list(registry.FAMILIES)[:2] == ['d3pm', 'continuous'], list(registry.FAMILIES)\n"
        "a = main.parser().parse_args(['train'])\n"
        "assert a.model == 'continuous', a.model\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_one_registry_of_families():
    from scoreflow._cli import main, registry

    # other families (distilled, recovery-ebm, ...) register too; these two and the default are fixed
    assert {"continuous", "d3pm"} <= set(registry.FAMILIES) and registry.default().name == "continuous"
    p = main.parser()
    train = next(a for a in p._subparsers._group_actions[0].choices["train"]._actions if a.dest == "model")
    assert train.choices == sorted(registry.FAMILIES) and train.default == "continuous"
