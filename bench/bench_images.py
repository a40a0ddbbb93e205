"""Images (issue 16): a pull against skopeo's copy of the same image, a cached rebuild, and
the CLI's start-up for image commands.

    .venv/bin/python bench/bench_images.py [N]     (default: 5 rounds)

1. Pull of a 5-layer image (busybox + four layers of 400 files each, ~24 MB unpacked, gzip)
   from a local registry (docker-registry in a namespace of its own, reached over a veth),
   store emptied before each round (rmi: layers and blobs removed), against, in the same
   rounds, interleaved:
     - `skopeo copy docker://... dir:DIR`: download and verify only (the issue's baseline);
     - `skopeo copy docker://... containers-storage:[overlay@ROOT+RUN]`: download, verify
       and unpack into an overlay store, which is what a pull does.
   and the floor of unpacking: GNU tar extracting the five archives from local files.
   Each is one command line (tether's CLI, skopeo), timed from exec to exit; the daemon has
   pulled once before the rounds (its registry client is imported on first use).
2. A cached rebuild of a 10-step Dockerfile (FROM, ENV, WORKDIR, COPY, RUN, RUN, COPY,
   EXPOSE, LABEL, CMD), whole `tether build` calls after a first build.
3. `tether images` and `tether pull --help` against a bare `python -I -S -c pass`.

The machine may be loaded by other work (a CI run): besides the medians, each round's pull is
divided by the skopeo copies of the same round (run next to it, the order flipping every
round), and the median of those paired ratios is reported too; the load average is recorded
at the start and the end.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from common import PY, REPO, host, launcher, loadavg, save, stats

sys.path.insert(0, os.path.join(REPO, "tests"))  # (common.py put it there already)
from imagetools import busybox_layer, config, docker_save, layer
from nshost import busybox_tar
from registry import REGISTRY_IP, registry

REF = f"{REGISTRY_IP}:5000/bench/five:1"


def make_layers(seed: int = 16) -> list[bytes]:
    rnd = random.Random(seed)
    words = [
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))
        for _ in range(2000)
    ]
    layers = [busybox_layer(busybox_tar())]
    for n in range(4):
        files: dict[str, bytes] = {}
        for i in range(400):
            # Half text (compresses like code and configs), half noise (like binaries).
            text = " ".join(rnd.choice(words) for _ in range(1200)).encode()
            files[f"opt/l{n}/d{i % 20}/f{i}"] = text + rnd.randbytes(len(text) // 2)
        dirs = ["opt", f"opt/l{n}", *(f"opt/l{n}/d{j}" for j in range(20))]
        layers.append(layer(files=files, dirs=dirs))
    return layers


def paired(a: list[float], b: list[float]) -> float:
    """The median of a[i] / b[i]: each round's ratio, taken under that round's load."""
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    mid = len(ratios) // 2
    med = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return round(med, 2)


def timed_cmd(cmd: list[str], env: dict[str, str] | None = None) -> float:
    # What the previous round wrote and deleted goes to the disk first (this VM's disk is
    # mounted with online discard): each command starts from the same quiet state.
    os.sync()
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    ms = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return ms


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    load_start = loadavg()
    tether = launcher()
    work = tempfile.mkdtemp(prefix="tether-bench-images-")
    with registry() as reg:
        h = host(["--insecure-registry", f"{REGISTRY_IP}:5000"])
        try:
            reg.connect(h)
            env = {**os.environ, "TETHER_HOST": f"unix://{h.socket}"}
            layers = make_layers()
            unpacked = sum(len(x) for x in layers)
            path = os.path.join(work, "five.tar")
            docker_save(path, layers, config(layers), [REF])
            h.ok("load", "-i", path)
            h.ok("push", REF)
            compressed = int(
                h.sh(
                    f"skopeo inspect --tls-verify=false --raw docker://{REF} | "
                    'python3 -c \'import json,sys; print(sum(x["size"] for x in json.load(sys.stdin)["layers"]))\''
                ).stdout
            )
            # The daemon's first pull imports its registry client: done before the rounds.
            h.ok("rmi", REF)
            h.ok("pull", REF)
            # skopeo in the host's network namespace, and in a mount namespace of its own:
            # containers-storage's overlay driver mounts its home, which must not outlive it.
            ns = [
                "nsenter",
                f"--net=/run/netns/{h.netns}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ]
            # The unpacking floor: GNU tar extracting the same five (uncompressed) archives from
            # local files, one after the other (no download, no decompression, no checks).
            archives = []
            for j, data in enumerate(layers):
                archives.append(os.path.join(work, f"layer{j}.tar"))
                with open(archives[-1], "wb") as f:
                    f.write(data)
            untar = " && ".join(
                f"mkdir -p $D/{j} && tar -x -f {a} -C $D/{j}" for j, a in enumerate(archives)
            )
            pull_ms: list[float] = []
            dir_ms: list[float] = []
            cs_ms: list[float] = []
            tar_ms: list[float] = []
            for i in range(n):
                order = (
                    ["tether", "dir", "cs", "tar"] if i % 2 == 0 else ["tar", "cs", "dir", "tether"]
                )
                for what in order:
                    if what == "tether":
                        h.ok("rmi", REF)
                        assert os.listdir(os.path.join(h.root, "images", "layers")) == []
                        pull_ms.append(timed_cmd([tether, "pull", "-q", REF], env))
                    elif what == "dir":
                        dest = os.path.join(work, f"dir{i}")
                        dir_ms.append(
                            timed_cmd(
                                [
                                    *ns,
                                    "skopeo",
                                    "copy",
                                    "--quiet",
                                    "--src-tls-verify=false",
                                    f"docker://{REF}",
                                    f"dir:{dest}",
                                ]
                            )
                        )
                        shutil.rmtree(dest)
                    elif what == "tar":
                        dest = os.path.join(work, f"tar{i}")
                        tar_ms.append(timed_cmd(["sh", "-c", f"D={dest}; {untar}"]))
                        shutil.rmtree(dest)
                    else:
                        root = os.path.join(work, f"cs{i}")
                        store = f"containers-storage:[overlay@{root}/root+{root}/run]five:1"
                        cs_ms.append(
                            timed_cmd(
                                [
                                    *ns,
                                    "skopeo",
                                    "copy",
                                    "--quiet",
                                    "--src-tls-verify=false",
                                    f"docker://{REF}",
                                    store,
                                ]
                            )
                        )
                        shutil.rmtree(root)

            # -- a cached rebuild of a 10-step Dockerfile -------------------------------------
            ctx = os.path.join(work, "ctx")
            os.makedirs(os.path.join(ctx, "src"))
            for i in range(50):
                with open(os.path.join(ctx, "src", f"m{i}.py"), "w") as f:
                    f.write(f"# module {i}\n" * 200)
            with open(os.path.join(ctx, "requirements.txt"), "w") as f:
                f.write("nothing==0\n")
            with open(os.path.join(ctx, "Dockerfile"), "w") as f:
                f.write(
                    "FROM busybox\n"
                    "ENV APP=/app MODE=bench\n"
                    "WORKDIR /app\n"
                    "COPY requirements.txt ./\n"
                    "RUN cat requirements.txt > /app/installed.txt\n"
                    "RUN mkdir -p /app/data && echo ready > /app/data/state\n"
                    "COPY src/ ./src/\n"
                    "EXPOSE 8000\n"
                    'LABEL org.example.bench="images"\n'
                    'CMD ["sh", "-c", "ls /app/src | wc -l"]\n'
                )
            h.import_busybox()
            first_ms = timed_cmd([tether, "build", "-t", "rebuild:1", ctx], env)
            rebuild_ms: list[float] = []
            for _ in range(max(n, 5)):
                t = time.perf_counter()
                out = subprocess.run(
                    [tether, "build", "-t", "rebuild:1", ctx],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                rebuild_ms.append((time.perf_counter() - t) * 1000)
                assert out.stdout.count(" ---> Using cache") == 9, out.stdout + out.stderr

            # -- start-up ---------------------------------------------------------------------
            bare, images_ms, help_ms = [], [], []
            for _ in range(20):
                bare.append(timed_cmd([PY, "-I", "-S", "-c", "pass"]))
                images_ms.append(timed_cmd([tether, "images"], env))
                help_ms.append(timed_cmd([tether, "pull", "--help"], env))
        finally:
            h.cleanup()
            shutil.rmtree(work, ignore_errors=True)
    p, d, c, u = stats(pull_ms), stats(dir_ms), stats(cs_ms), stats(tar_ms)
    result = {
        "image": {
            "layers": 5,
            "unpacked bytes": unpacked,
            "compressed bytes": compressed,
        },
        "tether pull (ms)": p,
        "skopeo copy to dir: (ms)": d,
        "skopeo copy to containers-storage: (ms)": c,
        "tar -x of the five archives from local files (ms)": u,
        "ratio pull / skopeo dir: (median)": round(p["median"] / d["median"], 2),
        "ratio pull / skopeo containers-storage: (median)": round(p["median"] / c["median"], 2),
        "ratio pull / skopeo dir:, paired per round (median)": paired(pull_ms, dir_ms),
        "ratio pull / skopeo containers-storage:, paired per round (median)": paired(
            pull_ms, cs_ms
        ),
        "load average at the start (1, 5, 15 min)": load_start,
        "first build, 10 steps (ms)": round(first_ms, 1),
        "cached rebuild, 10 steps (ms)": stats(rebuild_ms),
        "python -I -S -c pass (ms)": stats(bare),
        "tether images (ms)": stats(images_ms),
        "tether pull --help (ms)": stats(help_ms),
    }
    print(save("images", result))
    for k, v in result.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
