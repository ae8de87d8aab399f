"""The ``gqnbench`` command line: one subcommand module per job under ``gqnbench.commands``.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=handler)``; a handler takes the parsed arguments and
returns an exit code. Modules are imported only when the CLI starts, so ``import
gqnbench`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys

from gqnbench import __version__
from gqnbench.files import OUT_OF_SPACE
from gqnbench.training.interrupt import Interrupted, sigterm_interrupts

COMMAND_MODULES = (
    "gqnbench.commands.models",
    "gqnbench.commands.data",
    "gqnbench.commands.train",
    "gqnbench.commands.harness",
    "gqnbench.commands.run",
    "gqnbench.commands.study",
)

EXIT_CODES = """exit status:
  0    done (a finished run that was reused counts as done)
  1    a run failed or diverged, a cluster job failed (--resubmit-failed submits it again),
       a full disk, or an unexpected error
  2    bad input: unknown option or preset, bad --set value, bad data, a run or folder that
       another process is writing, an existing run this command would replace (see --fresh),
       or a cluster request sbatch refuses
  3    cluster jobs not finished yet (run the same command again later)
  130  interrupted (Ctrl-C), 143 stopped by SIGTERM (Slurm, systemd, docker stop): every running
       run checkpointed first, no queued run started; the message names the command that continues

Add --debug before the command to see a traceback instead of a one-line error."""


def continue_command(argv: list[str]) -> str:
    """The command line that continues an interrupted command: the same one, without ``--fresh``."""
    return shlex.join(["gqnbench", *(a for a in argv if a not in ("--fresh", "--debug"))])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqnbench",
        description="Benchmark and profiling suite for Generative Query Networks (GQN and the meta-learning GQN).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gqnbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback for every error")
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import a model plugin (a module or a .py file that calls gqnbench.models.register_model) "
        "before the command runs; repeatable, may also follow the command (README: 'Bring your own model')",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gqnbench.plugins import PluginError, load_plugins_from_argv

    try:  # plugin models first (entry points, --plugin), so every model choice includes them
        command_line = load_plugins_from_argv(sys.argv[1:] if argv is None else argv)
    except PluginError as exc:
        print(f"gqnbench: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(command_line)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_interrupts():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted()
        print(
            f"\n{'interrupted' if stop.signum == signal.SIGINT else 'stopped by ' + stop.signal_name}; "
            "results and checkpoints written so far are kept. To continue, run:\n  " + continue_command(argv),
            file=sys.stderr,
        )
        return stop.exit_status
    except (KeyError, ValueError, OSError) as exc:
        # User errors (unknown preset, bad override, bad data, a locked or existing run, a missing
        # file, an --out that is a file or not writable) get one clear line, not a traceback.
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:  # a full disk: the command failed, no bad input
            print(f"gqnbench {args.command}: failed: {msg}", file=sys.stderr)
            return 1
        print(f"gqnbench {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, the traceback with --debug
        if args.debug:
            raise
        print(f"gqnbench {args.command}: failed: {type(exc).__name__}: {exc} (add --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
