"""``python -m bench <module> ...`` runs ``python -m bench.<module> ...`` (what ``./dev bench`` calls)."""

from __future__ import annotations

import runpy
import sys

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m bench <module> [arguments], e.g. python -m bench ratelimit one")
    module = f"bench.{sys.argv[1]}"
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
