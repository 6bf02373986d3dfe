"""MkDocs hook: fail the build when a public name is missing from the API page.

The public names are the explicit re-exports (`from .x import y as y`) of `scoreflow/__init__.py`,
`scoreflow/data/__init__.py`, `scoreflow/train/__init__.py` and `scoreflow/metrics.py`, read with `ast` (nothing is
imported). Each must have an anchor `id="scoreflow[.data|.train|.metrics].NAME"` on the built API page. mkdocstrings
renders nothing, and says nothing, for a name its static analysis cannot resolve (a function that shares its name
with the module defining it is seen as the module), so without this check such names drop out silently.
"""

import ast
import re
from pathlib import Path

from mkdocs.exceptions import PluginError


_PACKAGES = {
    "scoreflow": "scoreflow/__init__.py",
    "scoreflow.data": "scoreflow/data/__init__.py",
    "scoreflow.train": "scoreflow/train/__init__.py",
    "scoreflow.metrics": "scoreflow/metrics.py",
}


def _reexports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            names += [a.asname for a in node.names if a.asname is not None and a.asname == a.name]
    return names


def on_post_page(output: str, page, config) -> str:
    if page.file.src_path != "api.md":
        return output
    root = Path(config.config_file_path).parent
    anchors = set(re.findall(r'id="([^"]+)"', output))
    missing = [
        f"{package}.{name}"
        for package, init in _PACKAGES.items()
        for name in _reexports(root / init)
        if f"{package}.{name}" not in anchors
    ]
    if missing:
        raise PluginError(
            "api_complete: the API page has no entry for " + ", ".join(missing) + ". Add a `:::` directive for each "
            "(by the full path of its defining module if the short one does not resolve) and an anchor "
            '`<a id="scoreflow.NAME"></a>` before it.'
        )
    return output
