"""Placeholder: the owning issue fills in this command module."""


def register(subparsers) -> None:  # noqa: ANN001
    return None
