"""`docker build` with tether's own runtime: each RUN step is a tether container.

Why not buildah (see docs/images.md): a RUN step here is a container like any other (the
same namespaces, capabilities, seccomp filter, device cgroup, through tether-shim) on the
network the build names (`--network`: default, host, none, or any tether network, which no
outside builder could join), and its layer is the container's upper directory, archived
once and moved into tether's layer store: no second image store, runtime or network stack
to install, and nothing to export and import.

A build runs the Dockerfile's stages (those the target needs), each instruction a step as
docker's classic builder prints it (`Step 2/5 : RUN ...`, ` ---> Running in ...`, ` --->
<id>`).  Each step's result is an image config (its id the config's digest); the cache
maps (parent id, instruction, its inputs) to that config and its layers, so a rebuild of
unchanged steps runs nothing: ` ---> Using cache`.  Inputs: the expanded instruction, the
build args a RUN sees, and for COPY/ADD the content, mode and link targets of every source
file (not their times), as docker's cache does.

COPY/ADD run in a helper process (copyin.py) in a mount namespace of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from tether.api import ports
from tether.api.containers import ContainerCreate, parse_signal
from tether.api.decode import decode
from tether.errors import InvalidParameter, NotFound, TetherError
from tether.images import dockerfile as dfp
from tether.images import oci
from tether.images.copyin import _escapes, _glob, _scoped
from tether.images.layers import write_diff
from tether.images.progress import Progress
from tether.images.reference import Reference, ReferenceError, parse
from tether.images.store import BlobRef, Image, ImageStore, LayerInfo
from tether.store import records

if TYPE_CHECKING:
    from tether.daemon.app import Daemon

log = logging.getLogger("tether.build")

DEFAULT_SHELL = ["/bin/sh", "-c"]
NOP = "/bin/sh -c #(nop) "
OVERLAY_XATTR = "trusted.overlay."


class BuildError(TetherError):
    status = 400

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildOptions:
    tags: list[Reference] = field(default_factory=list)
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = ""
    network: str = "default"
    no_cache: bool = False
    quiet: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    pull: bool = False
    platform: dict[str, str] | None = None
    remove: bool = True
    force_remove: bool = False
    # --cache-from: images whose layers and history are cache candidates (docker's classic
    # builder: a step matches the source's next history entry when everything before it
    # matched, so a pulled image rebuilds to itself on a host that never built it).
    cache_from: list[str] = field(default_factory=list)


@dataclass
class State:
    """An image being built: its config section, layers and history."""

    config: dict[str, Any]
    layers: list[str]
    history: list[dict[str, Any]]
    platform: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # author
    raw: bytes = b""  # the config JSON this state was read from or last written as

    def to_json(self) -> bytes:
        if not self.raw:
            self.raw = oci.make_config(
                self.config, self.layers, self.history, time.time(), self.platform, self.extra
            )
        return self.raw

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json()).hexdigest()

    def changed(self) -> State:
        """A copy to change (its JSON made afresh)."""
        return State(
            json.loads(json.dumps(self.config)),
            list(self.layers),
            [dict(h) for h in self.history],
            dict(self.platform),
            dict(self.extra),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> State:
        cfg = oci.parse_config(raw)
        extra = {"author": cfg.raw["author"]} if cfg.raw.get("author") else {}
        return cls(dict(cfg.config), list(cfg.diff_ids), cfg.history, cfg.platform, extra, raw)


class CacheEntry(msgspec.Struct):
    key: str
    config: str
    layers: list[str]
    created: float


class BuildCache:
    """Step results by cache key, in the store (kind "buildcache"); their layers are held."""

    def __init__(self, daemon: Daemon) -> None:
        self.store = daemon.store
        self.images = daemon.images
        self.entries: dict[str, CacheEntry] = {}
        for e in records.parse_all(
            "buildcache",
            self.store.load("buildcache"),
            lambda doc: msgspec.convert(doc, CacheEntry),
        ):
            self.entries[e.key] = e
        self._sync()

    def _sync(self) -> None:
        self.images.cache_layers = {d for e in self.entries.values() for d in e.layers}

    def get(self, key: str) -> State | None:
        e = self.entries.get(key)
        if e is None:
            return None
        if not all(self.images.layers.has(d) and d in self.images.layer_info for d in e.layers):
            return None
        return State.from_json(e.config.encode())

    def put(self, key: str, state: State) -> None:
        e = CacheEntry(key, state.to_json().decode(), list(state.layers), time.time())
        self.entries[key] = e
        with self.store.transaction():
            self.store.put("buildcache", key, None, msgspec.to_builtins(e))
        self._sync()

    def prune(self, all_: bool = True) -> tuple[list[str], int]:
        """Every entry (`builder prune -a`), or the dangling ones: those holding a layer no
        image has (what a rebuild of an image here would not need)."""
        if all_:
            keys = list(self.entries)
        else:
            kept = {d for img in self.images.by_id.values() for d in img.layers}
            keys = [k for k, e in self.entries.items() if not set(e.layers) <= kept]
        with self.store.transaction():
            for k in keys:
                self.store.delete("buildcache", k)
        for k in keys:
            del self.entries[k]
        self._sync()
        sizes = {d: i.size for d, i in self.images.layer_info.items()}
        removed = self.images.gc()
        return keys, sum(sizes.get(d, 0) for d in removed)


def _cache_key(parent: str, *parts: Any) -> str:
    return hashlib.sha256(json.dumps([parent, *parts], sort_keys=True).encode()).hexdigest()


def _hash_sources(root: str, patterns: list[str]) -> str:
    """Content, modes and link targets of every file a COPY/ADD names (times left out)."""
    h = hashlib.sha256()
    for pattern in patterns:
        h.update(b"P" + pattern.encode() + b"\0")
        if _escapes(pattern):
            continue
        for rel in _glob(root, pattern):
            top = _scoped(root, rel)
            stack = [(rel, top)]
            while stack:
                name, path = stack.pop()
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                h.update(
                    f"{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode()
                )
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(path).encode() + b"\0")
                elif stat.S_ISREG(st.st_mode):
                    h.update(str(st.st_size).encode() + b"\0")
                    with open(path, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                elif stat.S_ISDIR(st.st_mode):
                    for child in sorted(os.listdir(path), reverse=True):
                        stack.append((f"{name}/{child}", os.path.join(path, child)))
    return h.hexdigest()


def _lineage(src: State, st: State) -> bool:
    """Whether `st` is `src` or one of the steps that made it (history and layers a prefix:
    moby's isValidParent)."""
    return (
        len(st.history) <= len(src.history)
        and len(st.layers) <= len(src.layers)
        and st.history == src.history[: len(st.history)]
        and st.layers == src.layers[: len(st.layers)]
    )


def _set_env(env: list[str], key: str, value: str) -> list[str]:
    out = [e for e in env if e.split("=", 1)[0] != key]
    out.append(f"{key}={value}")
    return out


def _env_lookup(env: list[str], args: dict[str, str | None]) -> Any:
    values: dict[str, str] = {}
    for e in env:
        k, _, v = e.partition("=")
        values[k] = v

    def get(name: str) -> str | None:
        if name in values:
            return values[name]
        return args.get(name)

    return get


def _strip_overlay_xattrs(top: str) -> None:
    """What overlayfs recorded about copy-ups (origin, impure) is no layer's business; the
    opaque marker is kept."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            try:
                attrs = os.listxattr(name, follow_symlinks=False)
            except OSError:
                continue
            for a in attrs:
                if a.startswith(OVERLAY_XATTR) and a != "trusted.overlay.opaque":
                    try:
                        os.removexattr(name, a, follow_symlinks=False)
                    except OSError:
                        pass


class Builder:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.images: ImageStore = daemon.images
        self.cache = BuildCache(daemon)
        cleanup_intermediate(daemon)

    async def build(self, context: str, opts: BuildOptions, progress: Progress) -> Image:
        run = _Run(self, context, opts, progress)
        try:
            return await run.execute()
        finally:
            run.release()
            cleanup_intermediate(self.daemon)


class _Run:
    def __init__(
        self, builder: Builder, context: str, opts: BuildOptions, progress: Progress
    ) -> None:
        self.b = builder
        self.images = builder.images
        self.context = os.path.realpath(context)
        self.opts = opts
        self.progress = progress
        self.leased: list[str] = []
        self.stage_states: dict[str, State] = {}
        self.stage_by_index: dict[int, State] = {}
        self.used_args: set[str] = set()
        self.step = 0
        self.total = 0
        self.sources: list[State] = []
        self.scratch = tempfile.mkdtemp(prefix="build-", dir=self.images.content.tmpdir)

    def release(self) -> None:
        for d in self.leased:
            self.images.leases[d] -= 1
            if self.images.leases[d] <= 0:
                del self.images.leases[d]
        self.leased = []
        shutil.rmtree(self.scratch, ignore_errors=True)

    def hold(self, layers: list[str]) -> None:
        for d in layers:
            self.images.leases[d] += 1
            self.leased.append(d)

    async def say(self, text: str) -> None:
        if not self.opts.quiet:
            await self.progress.stream(text)

    # -- the cache: this daemon's steps, and --cache-from images ---------------------------

    async def _cache_sources(self) -> None:
        """--cache-from: the images here, as states; a name not here is skipped and said
        (dockerd only logs it)."""
        for name in self.opts.cache_from:
            img = self.images.lookup(name)
            if img is None or img.builtin:
                await self.say(f"[Warning] --cache-from {name}: no such image here, not used\n")
                continue
            self.hold(img.layers)
            self.sources.append(State.from_json(self.images.content.get(img.config_blob)))

    def _lookup(
        self, key: str, state: State, created_by: str, result: State | None = None
    ) -> State | None:
        """The step's cached result: from this daemon's cache, or with --cache-from (as
        docker's classic builder) only what lies in a source image's lineage, else the
        source's next layer when its history names this very step.  `result` is the step's
        own outcome when it changes only the config (the config a restored step gets)."""
        if self.opts.no_cache:
            return None
        local = self.b.cache.get(key)
        if not self.sources:
            return local
        if local is not None and any(_lineage(src, local) for src in self.sources):
            return local
        n = len(state.history)
        for src in self.sources:
            if not _lineage(src, state) or n >= len(src.history):
                continue
            entry = src.history[n]
            if entry.get("created_by", "") != created_by:
                continue
            new = (result if result is not None else state).changed()
            new.history = [*(dict(h) for h in state.history), dict(entry)]
            new.layers = list(state.layers)
            if not entry.get("empty_layer"):
                index = sum(1 for h in src.history[:n] if not h.get("empty_layer"))
                if index >= len(src.layers):
                    continue
                new.layers.append(src.layers[index])
            if (new.layers, new.history, new.config) == (src.layers, src.history, src.config):
                new = src  # the source itself: the same image id
            # One source from here on, as docker: the rest of its history is the match.
            self.sources = [src]
            return new
        return None

    # -- the whole build -----------------------------------------------------------------

    async def execute(self) -> Image:
        path = os.path.realpath(os.path.join(self.context, self.opts.dockerfile))
        if not path.startswith(self.context + os.sep) or not os.path.isfile(path):
            raise BuildError(f"Cannot locate specified Dockerfile: {self.opts.dockerfile}")
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            df = dfp.parse(text)
            stages, meta, used = dfp.stages(
                df,
                self.opts.build_args,
                dfp.automatic_args(self.opts.platform or oci.host_platform()),
            )
        except dfp.DockerfileError as exc:
            raise BuildError(str(exc)) from None
        self.escape = df.escape
        self.meta = meta
        await self._cache_sources()
        self.used_args |= used
        target = len(stages) - 1
        if self.opts.target:
            want = self.opts.target.lower()
            found = [s.index for s in stages if s.name == want]
            if not found:
                raise BuildError(f"failed to reach build target {self.opts.target} in Dockerfile")
            target = found[0]
        needed = self._needed(stages, target)
        todo = [s for s in stages if s.index in needed]
        self.total = sum(1 + len(s.instructions) for s in todo)
        if self.opts.labels:
            self.total += 1
        state: State | None = None
        for s in todo:
            state = await self._stage(s, stages)
        assert state is not None
        if self.opts.labels:
            self.step += 1
            text = " ".join(f'"{k}"="{v}"' for k, v in sorted(self.opts.labels.items()))
            await self.say(f"Step {self.step}/{self.total} : LABEL {text}\n")
            key = _cache_key(state.id, "LABELS", sorted(self.opts.labels.items()))
            new = state.changed()
            labels = dict(new.config.get("Labels") or {})
            labels.update(self.opts.labels)
            new.config["Labels"] = labels
            new.history.append(self._nop(f"LABEL {text}"))
            cached = self._lookup(key, state, new.history[-1]["created_by"], new)
            if cached is not None:
                await self.say(" ---> Using cache\n")
                state = cached
            else:
                self.b.cache.put(key, new)
                state = new
            await self.say(f" ---> {state.id.removeprefix('sha256:')[:12]}\n")
        unused = sorted(set(self.opts.build_args) - self.used_args - _PREDEFINED)
        if unused:
            await self.say(
                f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n"
            )
        img = self.images.commit(state.to_json(), self.opts.tags)
        if img.intermediate:
            img.intermediate = False  # a step's image that is also the result
            self.images._save(img)
        await self.progress.aux({"ID": img.id})
        await self.say(f"Successfully built {img.short_id}\n")
        for t in self.opts.tags:
            await self.say(f"Successfully tagged {t.familiar()}\n")
        return img

    def _needed(self, stages: list[dfp.Stage], target: int) -> set[int]:
        names = {s.name: s.index for s in stages if s.name}
        need = {target}
        todo = [target]
        while todo:
            s = stages[todo.pop()]
            refs = [s.base.lower()]
            refs += [i.flags["from"].lower() for i in s.instructions if "from" in i.flags]
            for r in refs:
                idx = names.get(r)
                if idx is None and r.isdigit() and int(r) < len(stages):
                    idx = int(r)
                if idx is not None and idx < s.index and idx not in need:
                    need.add(idx)
                    todo.append(idx)
        return need

    # -- one stage -----------------------------------------------------------------------

    async def _stage(self, s: dfp.Stage, stages: list[dfp.Stage]) -> State:
        self.step += 1
        await self.say(f"Step {self.step}/{self.total} : {s.from_inst.original}\n")
        state = await self._from(s, stages)
        self.args: dict[str, str | None] = {}
        self.cmd_set = False
        onbuild = list(state.config.get("OnBuild") or [])
        if onbuild:
            state = state.changed()
            state.config["OnBuild"] = None
            await self.say(
                f"# Executing {len(onbuild)} build trigger{'s' if len(onbuild) > 1 else ''}\n"
            )
            for trigger in onbuild:
                try:
                    inst = dfp.parse(trigger).instructions[0]
                except (dfp.DockerfileError, IndexError) as exc:
                    raise BuildError(f"invalid ONBUILD trigger {trigger!r}: {exc}") from None
                state = await self._instruction(inst, state, stages)
        for inst in s.instructions:
            self.step += 1
            await self.say(f"Step {self.step}/{self.total} : {inst.original}\n")
            state = await self._instruction(inst, state, stages)
            await self.say(f" ---> {state.id.removeprefix('sha256:')[:12]}\n")
        self.stage_by_index[s.index] = state
        if s.name:
            self.stage_states[s.name] = state
        return state

    async def _from(self, s: dfp.Stage, stages: list[dfp.Stage]) -> State:
        base = s.base
        named = self.stage_states.get(base.lower())
        if named is not None:
            await self.say(f" ---> {named.id.removeprefix('sha256:')[:12]}\n")
            return named
        if base.lower() == "scratch":
            plat = (
                oci.parse_platform(s.platform)
                if s.platform
                else (self.opts.platform or oci.host_platform())
            )
            return State({}, [], [], plat)
        platform = oci.parse_platform(s.platform) if s.platform else self.opts.platform
        img = await self._image(base, platform)
        self.hold(img.layers)
        state = State.from_json(self.images.content.get(img.config_blob))
        await self.say(f" ---> {img.short_id}\n")
        return state

    async def _image(self, name: str, platform: dict[str, str] | None) -> Image:
        """A FROM or --from image: local, else pulled (its progress in the build's stream)."""
        try:
            ref = parse(name)
        except ReferenceError as exc:
            raise BuildError(str(exc)) from None
        if not self.opts.pull:
            img = self.images.lookup(name)
            if img is not None:
                if img.builtin:
                    raise BuildError(
                        "the built-in host image cannot be a build's base: it is the host's own files"
                    )
                return img
        from tether.images.pull import pull, resolve

        if not ref.tag and not ref.digest:
            ref = ref.tagged_or_latest()
        resolved = await resolve(self.b.daemon.registries, ref, platform, None)
        return await pull(
            self.images, self.b.daemon.registries, ref, platform, None, self.progress, resolved
        )

    # -- instructions ---------------------------------------------------------------------

    def _env(self, state: State) -> Any:
        return _env_lookup(list(state.config.get("Env") or []), self.args)

    def _nop(self, text: str) -> dict[str, Any]:
        return {
            "created": oci.format_time(time.time()),
            "created_by": f"{NOP} {text}",
            "empty_layer": True,
        }

    async def _instruction(
        self, inst: dfp.Instruction, state: State, stages: list[dfp.Stage]
    ) -> State:
        lexer = dfp.Lexer(self.escape)
        env = self._env(state)
        cmd = inst.cmd
        try:
            if cmd == "RUN":
                return await self._run(inst, state)
            if cmd in ("COPY", "ADD"):
                return await self._copy(inst, state, stages, lexer, env)
            if cmd == "ARG":
                for name, default in dfp.arg_decls(inst, lexer, env):
                    if name in self.opts.build_args:
                        self.args[name] = self.opts.build_args[name]
                        self.used_args.add(name)
                    elif default is None and name in self.meta:
                        self.args[name] = self.meta[name]
                    else:
                        self.args[name] = default
                return state
            # Config-only steps: cached too (a new id each time would miss every later
            # step's cache), keyed by the parent, the text and what it may expand.
            key = _cache_key(
                state.id, "META", inst.original, sorted(self.args.items()), self.escape
            )
            new = self._metadata(inst, state, lexer, env)  # pure: its history is the match
            cached = self._lookup(key, state, new.history[-1]["created_by"], new)
            if cached is not None:
                await self.say(" ---> Using cache\n")
                return cached
            self.b.cache.put(key, new)
            return new
        except dfp.DockerfileError as exc:
            raise BuildError(str(exc)) from None

    def _metadata(self, inst: dfp.Instruction, state: State, lexer: dfp.Lexer, env: Any) -> State:
        """Instructions that change only the config (cached by the parent's id alone: the
        result is a pure function of it)."""
        new = state.changed()
        c = new.config
        cmd = inst.cmd
        shown = inst.rest
        if cmd == "ENV":
            pairs = dfp.key_values(inst, lexer, env)
            e = list(c.get("Env") or [])
            for k, v in pairs:
                e = _set_env(e, k, v)
            c["Env"] = e
            shown = " ".join(f"{k}={v}" for k, v in pairs)
        elif cmd == "LABEL":
            pairs = dfp.key_values(inst, lexer, env)
            labels = dict(c.get("Labels") or {})
            labels.update(pairs)
            c["Labels"] = labels
            shown = " ".join(f"{k}={v}" for k, v in pairs)
        elif cmd == "WORKDIR":
            path = lexer.word(inst.rest, env)
            if not path:
                raise BuildError("WORKDIR requires exactly one argument")
            if not path.startswith("/"):
                path = os.path.join(c.get("WorkingDir") or "/", path)
            c["WorkingDir"] = os.path.normpath(path)
            shown = c["WorkingDir"]
        elif cmd == "USER":
            user = lexer.word(inst.rest, env)
            if not user:
                raise BuildError("USER requires exactly one argument")
            c["User"] = user
            shown = user
        elif cmd == "EXPOSE":
            exposed = dict(c.get("ExposedPorts") or {})
            words = lexer.words(inst.rest, env)
            if not words:
                raise BuildError("EXPOSE requires at least one argument")
            for p in words:
                port, proto = ports.port_key(p)
                exposed[f"{port}/{proto}"] = {}
            c["ExposedPorts"] = exposed
            shown = " ".join(words)
        elif cmd in ("CMD", "ENTRYPOINT"):
            argv, _ = dfp.exec_or_shell(inst, list(c.get("Shell") or DEFAULT_SHELL))
            c[cmd.capitalize() if cmd == "CMD" else "Entrypoint"] = argv
            if cmd == "CMD":
                self.cmd_set = True
            elif not self.cmd_set:
                c["Cmd"] = None
            shown = json.dumps(argv)
        elif cmd == "VOLUME":
            vols = dict(c.get("Volumes") or {})
            words = inst.args if inst.json_form else lexer.words(inst.rest, env)
            if not words:
                raise BuildError("VOLUME specified can not be an empty string")
            for v in words:
                vols[v] = {}
            c["Volumes"] = vols
            shown = json.dumps(words)
        elif cmd == "STOPSIGNAL":
            sig = lexer.word(inst.rest, env)
            parse_signal(sig)
            c["StopSignal"] = sig
            shown = sig
        elif cmd == "SHELL":
            if not inst.args:
                raise BuildError("SHELL requires at least one argument")
            c["Shell"] = list(inst.args)
            shown = json.dumps(inst.args)
        elif cmd == "HEALTHCHECK":
            c["Healthcheck"] = _healthcheck(inst)
        elif cmd == "ONBUILD":
            trigger = inst.rest.strip()
            first = trigger.split(None, 1)[0].upper() if trigger else ""
            if first in ("ONBUILD", "FROM", "MAINTAINER"):
                raise BuildError(f"{first} isn't allowed as an ONBUILD trigger")
            c["OnBuild"] = [*(c.get("OnBuild") or []), trigger]
        elif cmd == "MAINTAINER":
            new.extra["author"] = inst.rest
        new.history.append(self._nop(f"{cmd} {shown}"))
        return new

    # -- RUN -------------------------------------------------------------------------------

    async def _run(self, inst: dfp.Instruction, state: State) -> State:
        for mount in inst.flags.get("mount", "").splitlines():
            fields = {k: v for k, _, v in (p.partition("=") for p in mount.split(","))}
            kind = fields.get("type", "bind")
            if kind != "cache":
                raise BuildError(
                    "the --mount option requires BuildKit. Refer to "
                    "https://docs.docker.com/go/buildkit/ to learn how to build images with "
                    "BuildKit enabled"
                )
            # A cache mount only speeds a step up: the step runs without it, what it would
            # have kept out of the layer goes into it.
            await self.say(
                f"[Warning] RUN --mount={mount}: tether runs this step without the cache mount\n"
            )
        network = inst.flags.get("network") or self.opts.network or "default"
        # USER: the step runs as that user, resolved in the image's /etc as a container's -u.
        user = str(state.config.get("User") or "")
        argv, _shell = dfp.exec_or_shell(inst, list(state.config.get("Shell") or DEFAULT_SHELL))
        # Build args in scope reach RUN as environment (ENV wins), and are part of its cache
        # key and history, as docker's "|N k=v" prefix.
        env_keys = {e.split("=", 1)[0] for e in state.config.get("Env") or []}
        arg_env = sorted(
            (k, v) for k, v in self.args.items() if v is not None and k not in env_keys
        )
        created_by = " ".join(argv)
        if arg_env:
            created_by = (
                f"|{len(arg_env)} " + " ".join(f"{k}={v}" for k, v in arg_env) + " " + created_by
            )
        key = _cache_key(
            state.id, "RUN", argv, arg_env, network if network in ("none", "host") else ""
        )
        cached = self._lookup(key, state, created_by)
        if cached is not None:
            await self.say(" ---> Using cache\n")
            self.hold(cached.layers)
            return cached
        parent = self._parent_image(state)
        body = {
            "Image": parent.id,
            "Cmd": argv,
            "Entrypoint": [],
            "Env": [*(state.config.get("Env") or []), *(f"{k}={v}" for k, v in arg_env)],
            "WorkingDir": state.config.get("WorkingDir") or "",
            "User": user,
            "Labels": {},
            "HostConfig": {"NetworkMode": network},
        }
        daemon = self.b.daemon
        req = decode(json.dumps(body).encode(), ContainerCreate)
        c = daemon.containers.create(req, None)
        await self.say(f" ---> Running in {c.short_id}\n")
        waiter = daemon.lifecycle.waiter(c.id, "next-exit")
        ok = False
        try:
            await daemon.lifecycle.start(c.id)
            code = await self._follow(c, waiter)
            if code != 0:
                raise BuildError(
                    f"The command '{' '.join(argv)}' returned a non-zero code: {code}", code
                )
            upper = os.path.join(daemon.containers.cdir(c), "upper")
            new = state.changed()
            diff_id = await asyncio.to_thread(self._commit_dir, upper, True)
            new.layers.append(diff_id)
            new.history.append({"created": oci.format_time(time.time()), "created_by": created_by})
            ok = True
        finally:
            if (ok and self.opts.remove) or self.opts.force_remove:
                await daemon.lifecycle.remove(c.id, True)
                await self.say(f"Removing intermediate container {c.short_id}\n")
        self.hold(new.layers)
        self.b.cache.put(key, new)
        return new

    def _parent_image(self, state: State) -> Image:
        """The image a RUN container starts from: the state itself, kept as an (unlisted)
        image while the container is made."""
        raw = state.to_json()
        img = self.images.by_id.get(state.id)
        if img is not None:
            return img
        img = self.images.commit(raw)
        # Unlisted (`images -a` shows it), removed when the build ends and no container
        # uses it any more (cleanup_intermediate).
        img.intermediate = True
        self.images._save(img)
        return img

    async def _follow(self, c: Any, waiter: asyncio.Future[int]) -> int:
        """The RUN's output into the build stream, until it exits; its exit code."""
        from tether.runtime import logs as logfile

        path = self.b.daemon.containers.paths(c)["log"]
        offset = 0
        while True:
            done = waiter.done()
            frames, offset = logfile.read_frames(path, offset)
            if frames and not self.opts.quiet:
                text = b"".join(f.data for f in frames).decode(errors="replace")
                await self.progress.stream(text)
            if done:
                return int(waiter.result())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), 0.05)
            except TimeoutError:
                pass

    def _commit_dir(self, upper: str, strip: bool) -> str:
        """A layer from a directory in overlayfs's form (a container's upper, a COPY's):
        archived once (its diff id), then moved into the layer store."""
        w = self.images.content.writer()
        try:
            diff_id, tar_size = write_diff(upper, w.write)
        except BaseException:
            w.abort()
            raise
        w.expected = diff_id
        blob = w.commit()
        size = 0
        for dirpath, _dirs, files in os.walk(upper):
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                if stat.S_ISREG(st.st_mode):
                    size += st.st_size
        if not self.images.layers.has(diff_id):
            if strip:
                _strip_overlay_xattrs(upper)
            tmp = self.images.layers.new_tmp()
            try:
                os.rename(upper, tmp)
            except OSError:
                shutil.copytree(upper, tmp, symlinks=True)
            self.images.layers.commit(tmp, diff_id)
        self.images.save_layer(
            LayerInfo(diff_id, size, tar_size, [BlobRef(blob, oci.OCI_LAYER, tar_size)])
        )
        return diff_id

    # -- COPY / ADD ------------------------------------------------------------------------

    async def _copy(
        self,
        inst: dfp.Instruction,
        state: State,
        stages: list[dfp.Stage],
        lexer: dfp.Lexer,
        env: Any,
    ) -> State:
        cmd = inst.cmd
        words = list(inst.args) if inst.json_form else lexer.words(inst.rest, env)
        if len(words) < 2:
            raise BuildError(
                f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined."
            )
        srcs, dest = words[:-1], words[-1]
        if cmd == "ADD":
            for s in srcs:
                if s.startswith(("http://", "https://", "git@")):
                    raise BuildError(
                        f"ADD of a URL ({s}) is not supported by tether's builder: download "
                        "it into the build context and ADD the file"
                    )
        workdir = state.config.get("WorkingDir") or "/"
        trailing = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
        if not dest.startswith("/"):
            dest = os.path.join(workdir, dest)
        dest = os.path.normpath(dest) + ("/" if trailing and os.path.normpath(dest) != "/" else "")
        chown = lexer.word(inst.flags["chown"], env) if "chown" in inst.flags else None
        chmod = inst.flags.get("chmod")
        if chmod is not None and (not chmod or any(ch not in "01234567" for ch in chmod)):
            raise BuildError(f"invalid chmod parameter: {chmod}")
        source = inst.flags.get("from")
        sources: dict[str, list[str]] = {}
        if source is not None:
            src_state = self._source_state(source, stages)
            from_key: Any = src_state.id
            lower = self._lower(src_state)
            sources[source] = [*lower, self._empty()]
            src_hash = _cache_key(src_state.id, srcs)
        else:
            from_key = None
            src_hash = await asyncio.to_thread(_hash_sources, self.context, srcs)
        key = _cache_key(state.id, cmd, srcs, dest, chown, chmod, from_key, src_hash)
        what = "file" if len(srcs) == 1 else "multi"
        created_by = f"{NOP} {cmd} {what}:{src_hash[:64]} in {dest} "
        cached = self._lookup(key, state, created_by)
        if cached is not None:
            await self.say(" ---> Using cache\n")
            self.hold(cached.layers)
            return cached
        work = tempfile.mkdtemp(prefix="copy-", dir=self.scratch)
        upper, wdir, mnt, scr = (os.path.join(work, n) for n in ("upper", "work", "mnt", "scratch"))
        for d in (upper, wdir, mnt, scr):
            os.makedirs(d)
        req = {
            "mountpoint": mnt,
            "lower": [*self._lower(state), self._empty()],
            "upper": upper,
            "work": wdir,
            "context": self.context,
            "sources": sources,
            "scratch": scr,
            "ops": [
                {
                    "cmd": cmd,
                    "src": srcs,
                    "dest": dest,
                    "chown": chown,
                    "chmod": chmod,
                    "from": source,
                }
            ],
        }
        import sys

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tether.images.copyin",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(json.dumps(req).encode())
        if proc.returncode != 0:
            try:
                message = json.loads(out.decode().strip().splitlines()[-1])["error"]
            except (ValueError, IndexError, KeyError):
                message = err.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
                message = f"{cmd} failed: {message[0]}"
            if not message.startswith(f"{cmd} failed"):
                message = f"{cmd} failed: {message}"
            raise BuildError(message)
        new = state.changed()
        diff_id = await asyncio.to_thread(self._commit_dir, upper, True)
        new.layers.append(diff_id)
        new.history.append({"created": oci.format_time(time.time()), "created_by": created_by})
        self.hold(new.layers)
        self.b.cache.put(key, new)
        return new

    def _source_state(self, name: str, stages: list[dfp.Stage]) -> State:
        st = self.stage_states.get(name.lower())
        if st is not None:
            return st
        if name.isdigit() and int(name) in self.stage_by_index:
            return self.stage_by_index[int(name)]
        img = self.images.lookup(name)
        if img is None:
            raise BuildError(
                f"COPY --from={name}: no stage of that name was built before this one, and "
                f"no image {name} is here (tether pull it first)"
            )
        self.hold(img.layers)
        return State.from_json(self.images.content.get(img.config_blob))

    def _lower(self, state: State) -> list[str]:
        return [self.images.layers.path(d) for d in reversed(state.layers)]

    def _empty(self) -> str:
        empty = os.path.join(self.images.dir, "empty")
        os.makedirs(empty, mode=0o755, exist_ok=True)
        return empty


_PREDEFINED = {
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
}


def _healthcheck(inst: dfp.Instruction) -> dict[str, Any]:
    def duration(text: str) -> int:
        units = {
            "ns": 1,
            "us": 1000,
            "ms": 1_000_000,
            "s": 1_000_000_000,
            "m": 60_000_000_000,
            "h": 3_600_000_000_000,
        }
        for u in sorted(units, key=len, reverse=True):
            if text.endswith(u):
                try:
                    return int(float(text[: -len(u)]) * units[u])
                except ValueError:
                    break
        raise BuildError(f'time: invalid duration "{text}"')

    rest = inst.rest.strip()
    word = rest.split(None, 1)[0].upper() if rest else ""
    if word == "NONE":
        return {"Test": ["NONE"]}
    if word != "CMD":
        raise BuildError('Unknown type "' + word + '" in HEALTHCHECK (try CMD)')
    body = rest[3:].strip()
    try:
        parsed = json.loads(body) if body.startswith("[") else None
    except ValueError:
        parsed = None
    test = ["CMD", *parsed] if isinstance(parsed, list) else ["CMD-SHELL", body]
    out: dict[str, Any] = {"Test": test}
    for flag, field_ in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ):
        if flag in inst.flags:
            out[field_] = duration(inst.flags[flag])
    if "retries" in inst.flags:
        out["Retries"] = int(inst.flags["retries"])
    return out


def cleanup_intermediate(daemon: Daemon) -> None:
    """Intermediate images no container uses any more (a RUN container gone)."""
    used = {c.image_id for c in daemon.containers.by_id.values()}
    for img in list(daemon.images.by_id.values()):
        if img.intermediate and not img.repo_tags and img.id not in used:
            try:
                daemon.images._delete(img)
            except (TetherError, NotFound, InvalidParameter):
                pass
