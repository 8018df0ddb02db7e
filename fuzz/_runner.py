"""Run hypothesis properties in seeded batches until a time budget is spent.

Each batch is one ``@given`` run with its own seed, so a long run explores
far more than CI's bounded examples; a failure prints hypothesis's shrunk
example and the seed that reproduces it, and the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout, for tests.hardening

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

Property = tuple[str, Callable[..., None], tuple[Any, ...]]


def main(description: str, properties: list[Property], argv: list[str] | None = None) -> int:
    """Parse ``--seconds/--batch/--seed`` and run ``properties`` round-robin."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--batch", type=int, default=200, help="examples per batch")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    args = parser.parse_args(argv)
    first = args.seed if args.seed is not None else random.randrange(1 << 30)
    deadline = time.monotonic() + args.seconds
    counts = {name: 0 for name, _, _ in properties}
    batch_seed = first
    print(f"fuzzing {', '.join(counts)} for {args.seconds:.0f}s, first seed {first}")
    while time.monotonic() < deadline:
        for name, check, strategies in properties:
            wrapped = seed(batch_seed)(settings(
                max_examples=args.batch, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True,
            )(given(*strategies)(check)))
            try:
                wrapped()
            except Exception:
                traceback.print_exc()
                print(f"FAILED: {name} with seed {batch_seed} "
                      f"(rerun: --seed {batch_seed} --seconds 1)")
                return 1
            counts[name] += args.batch
            if time.monotonic() >= deadline:
                break
        batch_seed += 1
    total = ", ".join(f"{n}: {c}" for n, c in counts.items())
    print(f"ok: no failure in {args.seconds:.0f}s ({total} examples; seeds {first}..{batch_seed})")
    return 0
