"""`python -m stages.training.launch PARENT_PID ARGV...`: run ARGV so that its whole process tree
dies with the worker that started it.

diffusion-pipe is a tree: the `deepspeed` runner starts `deepspeed.launcher.launch`, which starts
one `train.py` per GPU, and neither child gets a parent-death signal of its own. So this process
stays between the worker and the tree instead of exec'ing it: it becomes the tree's subreaper
(orphans of the tree are re-parented here, not to init), runs it in a process group of its own,
asks the kernel for SIGTERM when the worker dies, and then kills that group at once and every
descendant that left it. A SIGTERM or SIGINT from the driver (a stop) is
passed to the tree, which gets `TERM_WAIT_S` to exit before it is killed. The exit status is the
command's own, so the driver classifies the trainer's failure, not this wrapper's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TERM_WAIT_S = 5.0  # below the driver's KILL_WAIT_S: the tree is gone before it escalates
_POLL_S = 0.2


def _processes() -> list[tuple[int, int, str]]:
    """(pid, ppid, state) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # The name field may hold spaces and parentheses: state and ppid follow the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            found.append((int(entry.name), int(fields[1]), fields[0]))
    return found


def descendants(root: int) -> list[int]:
    """Every live (not yet exited) process below `root`, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid, state in _processes():
        if state != "Z":
            children.setdefault(ppid, []).append(pid)
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def groups_below(root: int) -> set[int]:
    """The process groups of `root`'s descendants (the command runs in a group of its own)."""
    groups = set()
    for pid in descendants(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(pid))
    return groups


def signal_tree(sig: signal.Signals) -> int:
    """Send `sig` to every descendant; returns how many there were."""
    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(pids)


def _reap(keep: int | None = None) -> None:
    """Collect exited orphans of the tree (re-parented here) so they do not linger as zombies;
    `keep` is the command itself, whose status is collected by `main`."""
    me = os.getpid()
    for pid, ppid, state in _processes():
        if ppid == me and state == "Z" and pid != keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def end_tree(grace_s: float, keep: int | None = None) -> None:
    """SIGTERM the tree, wait up to `grace_s` for it to exit, then SIGKILL what is left."""
    if grace_s > 0 and signal_tree(signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            _reap(keep)
            if not descendants(os.getpid()):
                return
            time.sleep(_POLL_S)
    signal_tree(signal.SIGKILL)
    _reap(keep)


def _exit_like(returncode: int) -> int:
    """Exit as the command did: its code, or death by its signal."""
    if returncode >= 0:
        return returncode
    sig = -returncode
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    return 128 + sig  # pragma: no cover - the signal ended this process


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(
            "usage: python -m stages.training.launch PARENT_PID COMMAND [ARGS...]", file=sys.stderr
        )
        return 2
    parent, command = int(argv[0]), argv[1:]
    stop: list[int] = []
    group: list[int] = []  # the command's process group, once it runs

    def orphaned() -> None:
        """The worker is gone: the command's group in one syscall (a step takes milliseconds),
        then any descendant that left it."""
        for pgid in group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        end_tree(0)

    def on_signal(signum: int, _frame: object) -> None:
        if os.getppid() != parent:  # the parent-death signal: the tree goes now, not a poll later
            orphaned()
            os._exit(1)
        stop.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before the signal was armed
        return 1
    try:
        # Its own process group, so that the whole group can be killed at once from here.
        child = subprocess.Popen(command, process_group=0)  # argv built by the training driver
    except OSError as exc:
        print(f"stages.training.launch: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 127
    group.append(child.pid)
    while (returncode := child.poll()) is None:
        if os.getppid() != parent:  # gone without a signal (not Linux): nobody follows the run
            orphaned()
            return 1
        if stop:
            end_tree(TERM_WAIT_S, keep=child.pid)
            return _exit_like(child.wait())
        _reap(keep=child.pid)
        time.sleep(_POLL_S)
    end_tree(TERM_WAIT_S if descendants(os.getpid()) else 0)  # ranks outliving their launcher
    return _exit_like(returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
