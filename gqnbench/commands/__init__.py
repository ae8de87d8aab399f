"""Subcommands of the ``gqnbench`` CLI, one module per job; each exposes ``register(subparsers)``.

Command modules are the only place that wire packages together for the user (they may
import any gqnbench subpackage); the packages themselves keep to the one-way data flow.
"""
