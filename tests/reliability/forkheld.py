"""Fork while another thread holds locks, in a process of its own (no other test's threads hold anything at the
fork): the harness of the fork tests. A test's script builds its locks and a ``child()`` check, then ends with
``sys.exit(fork_while_held(locks, child))``; the test runs it with ``run_script``."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

CHILD_TIMEOUT = 20.0   # a child that hangs past this dumps its threads' stacks and exits non-zero


def fork_while_held(locks: Sequence[Any], child: Callable[[], int]) -> int:
    """Another thread takes every lock and holds it across ``os.fork()``. In the child, ``child()``'s return is
    the exit status (an exception or a hang: non-zero, with its traceback on stderr). Returns 0 when the child
    exited 0, else 3, once the holder let go."""
    held, release = threading.Event(), threading.Event()
    taken: list[Any] = []

    def hold() -> None:
        taken.extend(lock for lock in locks if lock.acquire(timeout=5))
        held.set()
        release.wait(60)
        for lock in taken:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30) and len(taken) == len(locks), "the holder could not take every lock"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulthandler.dump_traceback_later(CHILD_TIMEOUT, exit=True)
            code = child()
            faulthandler.cancel_dump_traceback_later()
        except BaseException as exc:
            print("child:", repr(exc), file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    holder.join(60)
    return 0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 3


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args…`` with this module importable; asserts it exited 0, showing its stderr if not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(__file__),
                                                                     os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    return done
