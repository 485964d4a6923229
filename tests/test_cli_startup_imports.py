"""Start-up of the CLI: building every command's parser (what ``calm fit --help`` and every command
does first) imports neither torch nor scikit-learn; ``calm app``'s page imported both before."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_no_torch_and_no_scikit_learn():
    code = ("import sys\nfrom calm.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
