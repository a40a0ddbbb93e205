"""A busybox root filesystem tarball from Debian's busybox-static, for `tether image import`.

    python -m tether.runtime.busybox OUT.tar

The static binary, one symlink per applet in /bin, and the few files a shell and httpd expect
(/etc/passwd, /etc/group, /tmp, /root, /www).  The image the demo, the examples and the tests
run, in place of nginx or postgres.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time

BUSYBOX = "/bin/busybox"


def build(out: str, busybox: str = BUSYBOX) -> None:
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    now = time.time()

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w") as tar:
        for d in (
            "bin",
            "dev",
            "etc",
            "proc",
            "sys",
            "usr",
            "usr/bin",
            "var",
            "var/run",
            "www",
            "root",
        ):
            add_dir(tar, d)
        add_dir(tar, "tmp", 0o1777)
        with open(busybox, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), 0o755)
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mtime = now
            tar.addfile(info)
        add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file(tar, "www/index.html", b"hello from busybox\n")


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "busybox.tar"
    build(out)
    print(os.path.abspath(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
