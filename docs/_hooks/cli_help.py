"""MkDocs hook: replace each `<!-- scoreflow-help: ARGS -->` line of a page with the output of
`scoreflow ARGS --help`, so the command reference is the command's own text at build time and cannot drift.

The command is found the way pip finds it, from `[project.scripts]` in pyproject.toml, and runs in a subprocess
(one per page that asks for it), so `mkdocs serve` shows the CLI as it is now. A subcommand that does not exist
or a help that fails stops the build.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from mkdocs.exceptions import PluginError


_MARKER = re.compile(r"^<!-- scoreflow-help:(.*?)-->[ \t]*$", re.MULTILINE)

# Runs in the subprocess: call the entry point with each ARGS + ["--help"], collect stdout and the exit code.
_RUNNER = """
import contextlib, importlib, io, json, sys
module, func = sys.argv[1].split(":")
main = getattr(importlib.import_module(module), func)
out = []
for args in json.loads(sys.argv[2]):
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf):
        try:
            main(args + ["--help"])
        except SystemExit as e:
            code = e.code or 0
    out.append([code, buf.getvalue()])
print(json.dumps(out))
"""


def _entry_point(config) -> str:
    pyproject = Path(config.config_file_path).parent / "pyproject.toml"
    with open(pyproject, "rb") as f:
        return tomllib.load(f)["project"]["scripts"]["scoreflow"]


def on_page_markdown(markdown: str, page, config, files) -> str:
    markers = _MARKER.findall(markdown)
    if not markers:
        return markdown
    argv = [shlex.split(m) for m in markers]
    # A fixed width so the text does not depend on the terminal that runs the build.
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, _entry_point(config), json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(config.config_file_path).parent,
    )
    if proc.returncode != 0:
        raise PluginError(f"cli_help: `scoreflow --help` failed for {page.file.src_path}:\n{proc.stderr}")
    results = iter(json.loads(proc.stdout.strip().splitlines()[-1]))

    def replace(match: re.Match) -> str:
        code, text = next(results)
        if code != 0 or not text.strip():
            raise PluginError(f"cli_help: `scoreflow{match.group(1)}--help` exited {code} ({page.file.src_path})")
        return "```text\n" + text.rstrip() + "\n```"

    return _MARKER.sub(replace, markdown)
