"""``print_table``, the one table printer of the commands: plain and parseable when piped."""

from __future__ import annotations

import io

import pandas as pd

from gqnbench.cli import main
from gqnbench.commands.tables import print_table

ROWS = [
    {"model": "gqn", "preset": "paper", "parameters": "49,469,343", "configuration": "64x64, L=12 " * 12},
    {"model": "metagqn", "preset": "tiny", "parameters": "50,475", "configuration": None},
]


def test_a_piped_table_is_plain_unwrapped_text_with_the_first_cell_first():
    out = io.StringIO()
    print_table(ROWS, title="models", right={"parameters"}, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "models" and lines[1].split() == ["model", "preset", "parameters", "configuration"]
    assert "\x1b" not in out.getvalue()  # no colour codes off a terminal
    assert all(line == line.rstrip() for line in lines)
    gqn = next(line for line in lines if line.startswith("gqn "))
    assert gqn.split()[:3] == ["gqn", "paper", "49,469,343"] and gqn.endswith("64x64, L=12")  # one line, not wrapped
    tiny = next(line for line in lines if line.startswith("metagqn "))
    assert tiny.split() == ["metagqn", "tiny", "50,475", "-"]  # a missing cell reads "-"
    # Right-aligned numbers end in the same column.
    assert gqn.index("49,469,343") + len("49,469,343") == tiny.index("50,475") + len("50,475")


def test_a_dataframe_prints_like_rows():
    a, b = io.StringIO(), io.StringIO()
    print_table(ROWS, file=a)
    print_table(pd.DataFrame(ROWS), file=b)
    assert a.getvalue() == b.getvalue()


def test_commands_print_their_tables_through_the_helper(capsys):
    assert main(["params", "--preset", "tiny", "--models", "gqn"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows["module"] == ["total", "used"] and rows["inference_core"] == ["46,080", "46,080"]
    assert main(["models", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("gqn ")).split()[:3] == ["gqn", "tiny", "89,419"]
