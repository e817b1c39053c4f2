"""Run a function when a module is first imported (a post-import hook).

What ``wrapt.register_post_import_hook`` does, without importing wrapt (whose package import pulls in asyncio
and importlib.metadata, ~50 ms) at ``instrument()`` time: a meta-path finder that, for a watched top-level
module, lets the other finders find it and wraps the loader so the hooks run once the module has executed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from agentvigil._safety import fork_safe_lock

Hook = Callable[[Any], None]

_hooks: dict[str, list[Hook]] = {}
_lock = fork_safe_lock(reentrant=True)


class _Loader:
    """Executes the module with its own loader, puts that loader back on the module, then runs the hooks."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # the module must see its real loader (importlib.resources, reload, pickling look it up)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _fire(module.__name__, module)


class _Finder:
    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _hooks or fullname in self._busy:
            return None
        self._busy.add(fullname)  # the import lock of `fullname` is held: no other thread is here for it
        spec: Any = None
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # a namespace package or an old-style loader: left alone, its hooks run on a later call
        spec.loader = _Loader(spec.loader)
        return spec


_finder = _Finder()


def _fire(name: str, module: Any) -> None:
    with _lock:
        hooks = _hooks.pop(name, [])
    for hook in hooks:
        try:
            hook(module)
        except Exception as exc:  # the application's import must succeed whatever a hook does
            logging.getLogger("agentvigil").warning("agentvigil: post-import hook for %s failed: %r", name, exc)


def register_post_import_hook(hook: Hook, name: str) -> None:
    """Call ``hook(module)`` once ``name`` (a top-level module) is imported; at once if it already is."""
    with _lock:
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        module = sys.modules.get(name)
        if module is None:
            _hooks.setdefault(name, []).append(hook)
            return
    hook(module)
