"""The ``gqnbench`` command line: one subcommand module per job under ``gqnbench.commands``.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=handler)``; a handler takes the parsed arguments and
returns an exit code. Modules are imported only when the CLI starts, so ``import
gqnbench`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gqnbench import __version__

COMMAND_MODULES = (
    "gqnbench.commands.models",
    "gqnbench.commands.data",
    "gqnbench.commands.train",
    "gqnbench.commands.harness",
    "gqnbench.commands.run",
    "gqnbench.commands.study",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gqnbench",
        description="Benchmark and profiling suite for Generative Query Networks (GQN and the meta-learning GQN).",
    )
    parser.add_argument("--version", action="version", version=f"gqnbench {__version__}")
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; results written so far are kept (re-run the same command to continue)", file=sys.stderr)
        return 130
    except (KeyError, ValueError, FileNotFoundError) as exc:
        # User errors (unknown preset, bad override, missing file) get one clear line, not a traceback.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gqnbench {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
