"""Only ``tireg serve`` loads the web framework: ``--help`` and registry commands stay light."""

from __future__ import annotations

import subprocess
import sys

_RUN = """
import sys
from tireg.cli.app import main
for argv in (["--help"], ["serve", "--help"], ["list"], ["search", "cat"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)
web = ("flask", "werkzeug", "jinja2", "tireg.serve", "torch")
loaded = sorted(m for m in web if m in sys.modules)
print("loaded=" + ",".join(loaded))
"""


def test_commands_other_than_serve_never_import_flask() -> None:
    out = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "loaded="
