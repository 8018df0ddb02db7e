"""``hurricane analyze [--json | --explain] [--rcpt ADDRESS] FILE...``: read returned mail."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

from hurricane.bounce.analyze import analyze, to_prediction
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.evidence import is_catch_all
from hurricane.bounce.model import Analysis

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    import argparse
    from typing import Any

__all__ = ["add_parser", "run", "main"]


def _columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _help_formatter() -> type[argparse.HelpFormatter]:
    """argparse's formatter, sized as it sizes itself: it imports shutil (and with it
    bz2, lzma, fnmatch: ~3 ms) for the terminal's width, at each add_argument()."""
    import argparse

    class _HelpFormatter(argparse.HelpFormatter):
        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None) -> None:
            super().__init__(prog, indent_increment, max_help_position,
                             _columns() - 2 if width is None else width)

    return _HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze", help="analyze returned messages (bounces, auto-replies, ARF reports)",
        description="Analyze returned messages; FILE may be a directory (every file in it).",
        formatter_class=_help_formatter())
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per file, one per line (score.py's format)")
    p.add_argument("--explain", action="store_true",
                   help="print, per recipient, the evidence (stage, codes, family), the deciding "
                        "rule and the runner-up it beat")
    p.add_argument("--rcpt", metavar="ADDRESS", default=None,
                   help="the envelope recipient the messages arrived for (our VERP address)")
    p.add_argument("--rules", metavar="TOML", action="append", default=[],
                   help="an extra rules file checked before the packaged rules (repeatable)")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.set_defaults(func=run)


def _expand(paths: Sequence[str]) -> Iterator[str]:
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if os.path.isfile(full):
                    yield full
        else:
            yield path


def _summary(path: str, pred: dict[str, Any]) -> str:
    lines = ["%s: %s%s" % (path, pred["category"],
                           " (%s)" % pred["error"] if pred.get("error") else "")]
    for r in pred["results"]:
        lines.append("  %s %s %s %s %s%s [%s%s]" % (
            r["recipient"] or "-", r["action"], r["replycode"] or "-", r["status"] or "-",
            r["reason"], " hard" if r["hard"] else "", r["source"],
            ", " + r["rule"] if r["rule"] else ""))
        if r["diagnostic"]:
            lines.append("    " + " ".join(r["diagnostic"].split())[:160])
    return "\n".join(lines)


def explain(path: str, analysis: Analysis) -> str:
    """The evidence and the decision for each recipient of one analyzed message.

    Args:
        path: the file's name, for the heading.
        analysis: the analyzer's answer.

    Returns:
        Lines of text: per recipient the stage (and where it was read), the
        reply code, the enhanced status (specific or catch-all), the diagnostic
        type, the remote MTA, the reporter's family, then the reason, the rule
        that decided it and the runner-up it beat (docs/bounce-reasons.md).
    """
    lines = ["%s: %s%s" % (path, analysis.category,
                           " (%s)" % analysis.error if analysis.error else "")]
    for r in analysis.results:
        status_kind = ""
        if r.status:
            status_kind = " (%s%s)" % ("catch-all" if is_catch_all(r.status) else "specific",
                                      ", inferred" if r.status_inferred else "")
        lines.append("  recipient  %s" % (r.recipient or "-"))
        lines.append("    evidence: action %s; stage %s; code %s; status %s%s; diagnostic type %s;"
                     % (r.action, (r.stage + " (from the %s)" % r.stage_source) if r.stage
                        else "unknown", r.code or "-", r.status or "-", status_kind,
                        r.diagnostic_type or "-"))
        lines.append("              remote MTA %s; reporter family %s; source %s"
                     % (r.remote_mta or "-", r.family or "-", r.source))
        if r.diagnostic:
            lines.append("    text:     " + " ".join(r.diagnostic.split())[:300])
        lines.append("    decision: %s%s, by %s" % (r.reason, " (hard)" if r.hard else "",
                                                  r.decided_by or r.rule or "-"))
        if r.runner_up:
            lines.append("    runner-up: %s (%s)" % (r.runner_up, r.runner_up_rule or "-"))
        else:
            lines.append("    runner-up: none (no rule with another answer applied)")
    return "\n".join(lines)


def run(args: argparse.Namespace | SimpleNamespace) -> int:
    """Analyze each file; exit status 1 if any file could not be read."""
    try:
        classifier = ReplyClassifier.load(getattr(args, "rules", []) or [])
    except ValueError as e:
        print("hurricane analyze: %s" % (e,), file=sys.stderr)
        return 2
    status = 0
    out = sys.stdout
    # (one encoder for every line: json.dumps builds one per call; no circular
    # reference check, which a prediction, plain dicts and lists, cannot need)
    encode = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
    for path in _expand(args.files):
        try:
            with open(path, "rb") as fp:
                raw = fp.read()
        except OSError as e:
            print("hurricane analyze: %s: %s" % (path, e.strerror or e), file=sys.stderr)
            status = 1
            continue
        analysis = analyze(raw, args.rcpt, classifier=classifier)
        if getattr(args, "explain", False):
            out.write(explain(path, analysis) + "\n")
            continue
        pred = to_prediction(analysis, path)
        if args.json:
            out.write(encode(pred) + "\n")
        else:
            out.write(_summary(path, pred) + "\n")
    out.flush()
    return status


#: The options of the common invocations, read without argparse (see _plain_args).
_FLAGS = {"--json": "json", "--explain": "explain"}


def _plain_args(args_list: Sequence[str]) -> SimpleNamespace | None:
    """``analyze [--json|--explain]... FILE...`` with no FILE starting with "-": the
    namespace argparse would make of it; None for anything else, left to argparse.

    argparse and the parser it builds (importing gettext and locale, compiling a
    dozen regexes) are ~18 M instructions, a tenth of the command's start-up.
    """
    flags = {"json": False, "explain": False}
    n = 1
    while n < len(args_list) and args_list[n] in _FLAGS:
        flags[_FLAGS[args_list[n]]] = True
        n += 1
    files = list(args_list[n:])
    if args_list[:1] != ["analyze"] or not files or any(f.startswith("-") for f in files):
        return None
    return SimpleNamespace(command="analyze", json=flags["json"], explain=flags["explain"],
                           rcpt=None, rules=[], files=files, func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hurricane.bounce.cli [analyze] [--json] FILE...``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] != ["analyze"]:
        args_list.insert(0, "analyze")
    plain = _plain_args(args_list)
    if plain is not None:
        return run(plain)
    import argparse
    parser = argparse.ArgumentParser(prog="hurricane", formatter_class=_help_formatter())
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(args_list)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
