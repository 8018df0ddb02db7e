"""Compiled regular expressions kept between runs, as Python keeps bytecode.

``re.compile`` parses a pattern and assembles its program in pure Python
before handing the program to the C engine: ~60 ms for the ~350 patterns a
``hurricane analyze`` run over a few hundred messages compiles (the literal
prefilter's trie regex alone ~13 ms), a quarter of the instructions of the
whole process, paid again at every start. :func:`compile` keeps each
program (the arguments ``re`` passes to ``_sre.compile``) in a file beside
the bytecode, ``__pycache__/regex.<cache tag>.marshal``, and builds the
pattern from it directly the next time.

The cache cannot change an answer: an entry is found by the pattern's exact
source and flags, the file is used only by the very Python build (version
string and regex engine magic) that wrote it, the engine validates every
program it is given, and the pattern it returns compares equal to
``re.compile``'s (``re.Pattern.__eq__`` compares the programs). Anything
unexpected (a missing, unreadable, stale or damaged file, a Python whose
``re`` internals differ) falls back to ``re.compile``. The file is written
at exit, like bytecode: never when ``sys.dont_write_bytecode`` is set
(``PYTHONDONTWRITEBYTECODE``), silently not when the directory is not
writable.

It uses the internals of CPython's ``re`` (``re._parser``, ``re._compiler``
and ``_sre.compile``, as in CPython 3.11): only for the analyzer's own
patterns, and a Python whose internals differ simply compiles as usual.
"""

from __future__ import annotations

import atexit
import marshal
import os
import re
import sys
import threading
from collections.abc import Callable

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import AnyStr

__all__ = ["compile", "save", "cache_path"]

try:
    import _sre  # type: ignore[import-not-found]
    from re import _compiler as _rc  # type: ignore[attr-defined]
    from re import _parser as _rp  # type: ignore[attr-defined]

    #: The build whose programs the file holds: a program is valid for this engine only.
    _KEY: tuple[object, ...] | None = (sys.version, sys.implementation.cache_tag,
                                       _sre.MAGIC, _sre.CODESIZE)
except (ImportError, AttributeError):  # pragma: no cover - another Python
    _KEY = None

#: Programs kept in the file at most (the patterns of the packaged code and
#: rules are ~400; an operator's changing rule files must not grow it forever).
MAX_ENTRIES = 4096

#: (pattern, flags) -> the marshalled program; unmarshalled on first use only.
#: (pattern, flags, tag) -> the marshalled (source, program) of a source derived
#: from the pattern (see compile()).
_Key = tuple[str | bytes, int] | tuple[str | bytes, int, int]
_Table = dict[_Key, bytes]

_lock = threading.Lock()
_table: _Table | None = None
_new: _Table = {}
_used: set[_Key] = set()
_atexit = False


def cache_path() -> str:
    """The cache file for this Python (beside this module's bytecode)."""
    tag = sys.implementation.cache_tag or "python"
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        "regex.%s.marshal" % tag)


def _read(path: str) -> _Table:
    """The table in ``path``; empty when missing, unreadable, damaged or another build's."""
    try:
        with open(path, "rb") as fp:
            data = marshal.loads(fp.read())
        if not (isinstance(data, tuple) and len(data) == 2 and data[0] == _KEY
                and isinstance(data[1], dict)):
            return {}
        return data[1]
    except (OSError, ValueError, EOFError, TypeError):
        return {}


def _build(pattern: AnyStr, flags: int) -> tuple[re.Pattern[AnyStr], tuple[object, ...] | None]:
    """Compile as ``re._compiler.compile`` does, returning the program's arguments too."""
    try:
        p = _rp.parse(pattern, flags)
        code = _rc._code(p, flags)
        groupindex = p.state.groupdict
        indexgroup: list[str | None] = [None] * p.state.groups
        for k, i in groupindex.items():
            indexgroup[i] = k
        # (plain ints: the compiler emits int subclasses, which marshal refuses)
        args = (int(flags | p.state.flags), list(map(int, code)), p.state.groups - 1,
                dict(groupindex), tuple(indexgroup))
        compiled: re.Pattern[AnyStr] = _sre.compile(pattern, *args)
        marshal.dumps(args)     # (fails here, not at exit, on anything marshal refuses)
    except re.error:
        raise
    except Exception:  # pragma: no cover - re internals differ: no caching
        return re.compile(pattern, flags), None
    return compiled, args


def compile(pattern: AnyStr, flags: int = 0, *,  # noqa: A001
            derive: Callable[[], AnyStr] | None = None, tag: int = 0) -> re.Pattern[AnyStr]:
    """``re.compile(pattern, flags)``, from the cached program when there is one.

    With ``derive``: ``re.compile(derive(), flags)``, where ``derive()`` is a
    source computed from ``pattern`` alone by code that ``tag`` fingerprints
    (alternation.py's merge of a rule's alternatives, ~50 us a rule): a cached
    entry holds the derived source too, so a run that finds it skips the
    derivation; a changed derivation has another tag, hence another entry.
    """
    global _table, _atexit
    flags = int(flags)
    if _KEY is None:
        return re.compile(pattern, flags)  # pragma: no cover - another Python
    if flags & re.DEBUG:
        return re.compile(pattern, flags)   # (prints the program: nothing to cache)
    table = _table
    if table is None:
        with _lock:
            if _table is None:
                _table = _read(cache_path())
            table = _table
    key: _Key = (pattern, flags) if derive is None else (pattern, flags, tag)
    blob = table.get(key)
    if blob is not None:
        _used.add(key)
        try:
            if derive is None:
                return _sre.compile(pattern, *marshal.loads(blob))  # type: ignore[no-any-return]
            source, args = marshal.loads(blob)
            if type(source) is type(pattern):
                return _sre.compile(source, *args)  # type: ignore[no-any-return]
        except Exception:
            pass
        table.pop(key, None)   # damaged or not this engine's: compile it again
    source = pattern if derive is None else derive()
    compiled, args = _build(source, flags)
    if args is not None:
        blob = marshal.dumps(args if derive is None else (source, args))  # type: ignore[arg-type]
        table[key] = blob
        _new[key] = blob
        if not _atexit:
            _atexit = True
            atexit.register(save)
    return compiled


def save(path: str | None = None) -> bool:
    """Write the programs compiled since the start into the cache file (merged with
    what is there); True when written. Called at exit; a no-op when nothing is new
    or bytecode is not to be written."""
    if not _new or sys.dont_write_bytecode or _KEY is None:
        return False
    path = path or cache_path()
    with _lock:
        merged = _read(path)
        if len(merged) + len(_new) > MAX_ENTRIES:
            # start again from the patterns this run used
            merged = {k: v for k, v in (_table or {}).items() if k in _used}
        merged.update(_new)
        if len(merged) > MAX_ENTRIES:
            return False
        data = marshal.dumps((_KEY, merged))  # type: ignore[arg-type]
        tmp = "%s.%d.tmp" % (path, os.getpid())
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as fp:
                fp.write(data)
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        _new.clear()
    return True
