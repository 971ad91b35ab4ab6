"""Where learner code runs: a fresh interpreter in a child process, never in the app's.

On Linux with bubblewrap (`bwrap`), the child runs in a sandbox that sees only the Python runtime,
the few installed packages the exercises need, a copy of the files an exercise needs (/lab), the
exercise database's socket folder and the run's Redis socket folder; a tmpfs as its working
folder (/work, gone when the run ends); no network (its own network namespace: not even
loopback), its own PID, IPC and UTS namespaces, an environment with nothing but what is named here,
no capabilities, and (as root, with setpriv) the user nobody. A cgroup per run bounds the memory
and the processes of the whole tree; rlimits bound CPU seconds and file size (and, without
cgroups, memory per process). Without bubblewrap the child still gets a fresh interpreter, a
throwaway folder, an empty environment and the limits the platform has; `capabilities()` says
which protections this machine gives and which it lacks.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

# Packages the child imports, and what they need: nothing else of the app's environment is bound.
CHILD_PACKAGES = ("sqlalchemy", "asyncpg", "redis", "greenlet", "typing_extensions")
FAKEREDIS_PACKAGES = ("fakeredis", "sortedcontainers")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "lab2-exercises"
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    step_seconds: float = 10.0  # wall time for one request (loading the code, one check's call)
    cpu_seconds: int = 30
    memory_bytes: int = 512 * 2**20
    processes: int = 64
    file_bytes: int = 16 * 2**20
    work_bytes: int = 64 * 2**20  # the tmpfs working folder
    open_files: int = 1024


@dataclass(frozen=True)
class Protection:
    name: str
    present: bool
    how: str  # what gives it here, or why it is missing


@dataclass(frozen=True)
class Capabilities:
    """What this machine gives the sandbox."""

    platform: str
    bwrap: str | None
    setpriv: str | None
    cgroup: str | None  # "v1" or "v2"
    cgroup_missing: str  # why not, when cgroup is None
    redis_server: str | None

    @property
    def os_sandbox(self) -> bool:
        return self.bwrap is not None

    @property
    def root(self) -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def protections(self) -> list[Protection]:
        rlimits = self.platform != "win32"
        box = self.os_sandbox
        cg = self.cgroup is not None
        user = ("user nobody (setpriv), no capabilities" if self.root and self.setpriv
                else "the app's own user inside a user namespace, no capabilities" if not self.root
                else "uid 0 without capabilities (no setpriv to switch to nobody)")
        return [
            Protection("fresh interpreter in a child process", True, "always"),
            Protection("environment without secrets", True, "only the variables the runner names"),
            Protection("throwaway working folder", True, "a tmpfs in the sandbox" if box else "a temporary folder"),
            Protection("wall time", True, "the grader stops a step that does not answer"),
            Protection("CPU seconds", rlimits, "RLIMIT_CPU" if rlimits else "no rlimits on Windows"),
            Protection("file size", rlimits, "RLIMIT_FSIZE" if rlimits else "no rlimits on Windows"),
            Protection("memory of the whole tree", cg, f"cgroup {self.cgroup}" if cg else
                       f"{self.cgroup_missing}; RLIMIT_AS per process instead" + (
                           " (not enforced on macOS)" if self.platform == "darwin" else "")),
            Protection("processes of the whole tree", cg, f"cgroup {self.cgroup}" if cg else
                       f"{self.cgroup_missing}; " + ("RLIMIT_NPROC is not enforced for root" if self.root
                                                     else "RLIMIT_NPROC per user instead")),
            Protection("no network", box, "bubblewrap: a network namespace of its own" if box
                       else "needs bubblewrap (Linux)"),
            Protection("the app's files out of reach", box, "bubblewrap: only named paths are mounted" if box
                       else "needs bubblewrap (Linux)"),
            Protection("an unprivileged user", box, user if box else "needs bubblewrap (Linux)"),
        ]

    def missing(self) -> list[str]:
        return [p.name for p in self.protections() if not p.present]


@functools.cache
def capabilities() -> Capabilities:
    cgroup, why = _cgroup_support()
    return Capabilities(sys.platform, shutil.which("bwrap") if sys.platform == "linux" else None,
                        shutil.which("setpriv"), cgroup, why, shutil.which("redis-server"))


def _cgroup_support() -> tuple[str | None, str]:
    if sys.platform != "linux":
        return None, "no cgroups on this platform"
    v1 = [CGROUP_ROOT / "memory", CGROUP_ROOT / "pids"]
    if all((path / "cgroup.procs").exists() for path in v1):
        if all(os.access(path, os.W_OK) for path in v1):
            return "v1", ""
        return None, "the memory and pids cgroups are not writable by the app"
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists():
        if {"memory", "pids"} <= set(controllers.read_text().split()) and os.access(CGROUP_ROOT, os.W_OK):
            return "v2", ""
        return None, "cgroup v2 without the memory and pids controllers delegated to the app"
    return None, "no cgroup file system"


# --- a cgroup per run ---------------------------------------------------------------------


class RunCgroup:
    """The run's memory and pids cgroups (v1: one per hierarchy; v2: one)."""

    def __init__(self, kind: str, name: str, limits: Limits) -> None:
        self.kind = kind
        if kind == "v1":
            self.dirs = {"memory": CGROUP_ROOT / "memory" / CGROUP_NAME / name,
                         "pids": CGROUP_ROOT / "pids" / CGROUP_NAME / name}
            settings = {("memory", "memory.limit_in_bytes"): limits.memory_bytes,
                        ("pids", "pids.max"): limits.processes}
        else:
            parent = CGROUP_ROOT / CGROUP_NAME
            parent.mkdir(exist_ok=True)
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
            self.dirs = {"memory": parent / name, "pids": parent / name}
            settings = {("memory", "memory.max"): limits.memory_bytes, ("memory", "memory.swap.max"): 0,
                        ("pids", "pids.max"): limits.processes}
        for folder in set(self.dirs.values()):
            folder.mkdir(parents=True, exist_ok=True)
        for (controller, setting), value in settings.items():
            try:
                (self.dirs[controller] / setting).write_text(str(value))
            except OSError:
                if setting != "memory.swap.max":
                    raise

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(folder / "cgroup.procs") for folder in self.dirs.values()})

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except OSError:
            return ""

    def memory_peak(self) -> int | None:
        raw = self._read("memory", "memory.max_usage_in_bytes" if self.kind == "v1" else "memory.peak").strip()
        return int(raw) if raw.isdigit() else None

    def hit_memory_limit(self) -> bool:
        if self.kind == "v1":
            return self._read("memory", "memory.failcnt").strip() not in ("", "0")
        return _event_count(self._read("memory", "memory.events"), "oom_kill") > 0

    def hit_process_limit(self) -> bool:
        return _event_count(self._read("pids", "pids.events"), "max") > 0

    def kill_all(self) -> None:
        kill_cgroup(list(self.dirs.values()))

    def remove(self) -> None:
        self.kill_all()
        for folder in set(self.dirs.values()):
            try:
                folder.rmdir()
            except OSError:
                pass


def _event_count(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def kill_cgroup(folders: list[Path], timeout: float = 5.0) -> None:
    """SIGKILL every process in the folders' cgroups until none is left (a fork races the kill)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set()
        for folder in folders:
            try:
                pids |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def sweep_cgroups() -> None:
    """Remove the cgroups of runs whose app process is gone (named <app pid>-<run>)."""
    kind = capabilities().cgroup
    if kind is None:
        return
    roots = ([CGROUP_ROOT / "memory" / CGROUP_NAME, CGROUP_ROOT / "pids" / CGROUP_NAME] if kind == "v1"
             else [CGROUP_ROOT / CGROUP_NAME])
    for root in roots:
        if not root.is_dir():
            continue
        for folder in root.iterdir():
            owner = folder.name.split("-")[0]
            if folder.is_dir() and owner.isdigit() and not alive(int(owner)):
                kill_cgroup([folder])
                try:
                    folder.rmdir()
                except OSError:
                    pass


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (the owner of a leftover, named after its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the child's command ------------------------------------------------------------------


def runtime_prefix() -> Path:
    """The Python installation (not the virtual environment): its binary and standard library."""
    return Path(sys.base_prefix).resolve()


def interpreter() -> Path:
    return Path(os.path.realpath(sys.executable))


def package_paths(names: tuple[str, ...]) -> list[Path]:
    """The top-level files and folders of these installed distributions in site-packages, their
    metadata (.dist-info) included: some read their own version at import."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    found: set[Path] = set()
    for name in names:
        for file in importlib.metadata.distribution(name).files or ():
            top = file.parts[0]
            if top.endswith(".data") or top in ("..", "__pycache__"):
                continue
            found.add(site / top)
    return sorted(path for path in found if path.exists())


def _ancestors(path: Path) -> list[str]:
    """`--perms 0755 --dir` for each folder above path, so the unprivileged user can walk to it."""
    args = []
    for parent in reversed(path.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def bwrap_command(*, lab: Path, sockets: dict[str, Path], limits: Limits, packages: list[Path],
                  argv: list[str], env: dict[str, str]) -> list[str]:
    """The bwrap command line: `sockets` maps a folder in the sandbox to a folder of the host."""
    caps = capabilities()
    args = [caps.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = runtime_prefix()
    if not str(prefix).startswith("/usr/"):
        args += _ancestors(prefix) + ["--ro-bind", str(prefix), str(prefix)]
    args += ["--perms", "0755", "--dir", "/site"]
    for path in packages:
        args += ["--ro-bind", str(path), f"/site/{path.name}"]
    args += ["--ro-bind", str(lab), "/lab"]
    for inside, outside in sockets.items():
        args += _ancestors(Path(inside)) + ["--bind", str(outside), inside]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.work_bytes), "--perms", "1777", "--tmpfs", "/work", "--chdir", "/work",
             "--cap-drop", "ALL"]
    if caps.root and caps.setpriv:
        # bwrap keeps root's uid; setpriv then drops to nobody before Python starts.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP", "--",
                 caps.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [*args, "--", *argv]


def rlimits(limits: Limits, *, cgroup: bool) -> dict[str, int]:
    values = {"RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_CORE": 0,
              "RLIMIT_NOFILE": limits.open_files}
    if not cgroup:
        values["RLIMIT_AS"] = limits.memory_bytes * 2  # address space, not memory: leave room
        if not capabilities().root:
            values["RLIMIT_NPROC"] = _user_processes() + limits.processes
    return values


def _user_processes() -> int:
    try:
        import psutil

        uid = os.getuid()
        return sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid)
    except Exception:  # noqa: BLE001
        return 256
