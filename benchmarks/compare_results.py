"""Compare two `results.json` files figure by figure: the check that a refactor left `make run` unchanged.

Every number under `models` (validation and test metrics, both protocols, slices) of the first file is
compared with the same path in the second; the exit status is 0 only when all are identical and both
files hold the same models and the same selected model.

    .venv/bin/python -m benchmarks.compare_results before/results.json data/results/amazon-beauty/results.json
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.compare_results")


def numbers(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in a nested dict, keyed by its dotted path (booleans are not numbers here)."""
    found: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = value
    return found


def selected_model(results: dict[str, Any]) -> str | None:
    """The model the evaluation selected (results.json's `selection.model`)."""
    selection = results.get("selection")
    return selection.get("model") if isinstance(selection, dict) else selection


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The differences between two results.json documents, one line each (empty = identical figures)."""
    old, new = numbers(before["models"]), numbers(after["models"])
    differences = [f"{path}: {old[path]} -> {new[path]}" for path in sorted(old.keys() & new.keys())
                   if old[path] != new[path]]
    differences += [f"{path}: only before" for path in sorted(old.keys() - new.keys())]
    differences += [f"{path}: only after" for path in sorted(new.keys() - old.keys())]
    if selected_model(before) != selected_model(after):
        differences.append(f"selection: {selected_model(before)} -> {selected_model(after)}")
    logger.info("%d figures compared over models %s", len(old.keys() | new.keys()), sorted(after["models"]))
    return differences


def main() -> int:
    """Compare the two files named on the command line; log every difference."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    differences = compare(*(json.loads(path.read_text()) for path in (args.before, args.after)))
    for line in differences:
        logger.info("DIFFERS %s", line)
    logger.info("%d differences%s", len(differences), ": the figures are identical" if not differences else "")
    return 0 if not differences else 1


if __name__ == "__main__":
    sys.exit(main())
