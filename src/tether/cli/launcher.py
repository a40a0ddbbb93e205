"""Writes the fast `tether` launcher that `./run install` puts in /usr/local/bin.

pip's console-script wrapper imports `re` (about 12 ms here) and the interpreter's `site`
processing costs about 5 ms more; together they were half of the CLI's 40 ms start-up budget.
The launcher runs the virtualenv's interpreter with -S and puts exactly the two directories
the CLI needs on sys.path.  It enters through tether/cli/fast.py, which runs the everyday
plain forms (ps, network ls, inspect, ...) without loading main.py and the command modules,
and hands everything else to main.py.  The pip-made .venv/bin/tether still works; it is
only slower.

    python -m tether.cli.launcher /usr/local/bin/tether
"""

from __future__ import annotations

import os
import sys
import sysconfig

TEMPLATE = """#!{python} -S
# tether CLI launcher, written by `python -m tether.cli.launcher` (see that module for why).
import sys
sys.path[0:0] = {paths!r}
from tether.cli.fast import main
sys.exit(main())
"""


def write(path: str) -> None:
    import tether

    src = os.path.dirname(os.path.dirname(os.path.abspath(tether.__file__)))
    paths = [src, sysconfig.get_paths()["purelib"]]
    text = TEMPLATE.format(python=sys.executable, paths=paths)
    tmp = path + ".tmp"
    if os.path.islink(path) or os.path.exists(path):
        os.unlink(path)
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "/usr/local/bin/tether")
