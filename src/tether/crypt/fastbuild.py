"""`python -m tether.crypt.fastbuild`: build tether-crypt's C data path ahead of time (what
`./run install` does), failing loudly if it cannot be built: tether-crypt would otherwise
move every frame in Python at half the speed (datapath.load_fast)."""

from __future__ import annotations

import os
import sys

from tether.cbuild import build

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastcrypt.c")
LIBS = ("crypto",)

if __name__ == "__main__":
    sys.stdout.write(build(SOURCE, "_fastcrypt", extension=True, libs=LIBS) + "\n")
