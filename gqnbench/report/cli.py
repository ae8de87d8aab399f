"""``python -m gqnbench.report [RESULTS...] [--baseline RESULTS...] [--out DIR] [--threshold 0.05]``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gqnbench.files import OUT_OF_SPACE
from gqnbench.report.inputs import ReportInputError, load_results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gqnbench.report",
        description="Write a Markdown + self-contained HTML report (with PNG figures and CSV tables) from gqnbench "
        "results files and pytest-benchmark JSON; optionally compare against a baseline result set.",
    )
    parser.add_argument(
        "results",
        nargs="*",
        default=["results"],
        help="results files or folders, scanned recursively for *.json (default: results/, where the training "
        "and harness commands write)",
    )
    parser.add_argument(
        "--baseline", nargs="+", metavar="RESULTS", help="baseline results files or folders to compare against"
    )
    parser.add_argument("--out", default="report", help="output folder (default: ./report)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.05,
        help="regression threshold as a fraction: a median this much above the baseline's is flagged (default 0.05)",
    )
    parser.add_argument("--title", default="gqnbench report")
    parser.add_argument(
        "--strict", action="store_true", help="fail on a section that cannot be built instead of noting it"
    )
    parser.add_argument(
        "--fail-on-regression", action="store_true", help="exit 1 when the comparison flags a regression"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threshold < 0:
        print("gqnbench report: error: --threshold must be >= 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python -m gqnbench.report " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        results = load_results(args.results, exclude=[out])
        baseline = load_results(args.baseline, exclude=[out]) if args.baseline else None
        if not results:
            print(f"gqnbench report: error: no results files found in {', '.join(args.results)}", file=sys.stderr)
            return 2
        # Imported late: matplotlib/seaborn start-up is not needed for --help or input errors.
        from gqnbench.report.build import build_report
        from gqnbench.report.compare import collect_metrics, compare_metrics, regressions

        try:
            report = build_report(
                results,
                out,
                baseline=baseline,
                threshold=args.threshold,
                command=command,
                title=args.title,
                strict=args.strict,
            )
        except OSError as exc:  # a full disk (exit 1), an unwritable --out (2): nothing written, an old report whole
            print(f"gqnbench report: error: cannot write the report to {out}: {exc}", file=sys.stderr)
            return 1 if exc.errno in OUT_OF_SPACE else 2
    except ReportInputError as exc:
        print(f"gqnbench report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.markdown}, {report.html} ({len(results.files)} results files)")
    if baseline is not None:
        lines = regressions(compare_metrics(collect_metrics(results), collect_metrics(baseline), args.threshold))
        for line in lines:
            print(f"REGRESSION {line}")
        if lines and args.fail_on_regression:
            return 1
    return 0
