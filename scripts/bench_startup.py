"""Process start: seconds from launching Python to the end of an import or a ``--help``.

Each case runs in a fresh interpreter (the one running this script), median of ``--repeats``
runs, so the figures include Python's own start (about 0.02 s). Third-party imports (torch,
PyTorch Geometric, Lightning) are timed the same way, as the floor a verb that needs them
cannot go below.

Prints a table and writes JSON. Usage:
  python scripts/bench_startup.py [--repeats 5] [--out runs/bench/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "molml --help": "from molml.cli import main; main(['--help'])",
    "import molml": "import molml",
    "molml screen --help": "from molml.cli import main; main(['screen', '--help'])",
    "molml explain --help": "from molml.cli import main; main(['explain', '--help'])",
    "molml screen's imports (molml.screen.run)": "import molml.screen.run",
    "molml fit's imports (molml.training)": "import molml.training",
    "import torch": "import torch",
    "import torch_geometric": "import torch_geometric",
    "import lightning": "import lightning",
}


def seconds(code: str, repeats: int) -> float:
    """Median wall time of ``python -c code`` (a SystemExit from ``--help`` is fine)."""
    wrapped = f"try:\n    {code}\nexcept SystemExit:\n    pass"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{code!r} failed:\n{done.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs/bench/startup.json")
    args = parser.parse_args()

    rows = []
    print(f"median of {args.repeats} fresh processes")
    print("| case | seconds |")
    print("| --- | ---: |")
    for name, code in CASES.items():
        median = seconds(code, args.repeats)
        rows.append({"case": name, "seconds": median, "code": code})
        print(f"| {name} | {median:.2f} |", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
