"""Model plugins (issue 14): the README's fixture plugin through every command and into the report.

The fixture (tests/plugins/myvariant.py) is loaded by ``--plugin FILE.py`` and by the entry
point of a throwaway installed package (a dist-info folder on sys.path); two broken plugins
get the one clear error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gqnbench import plugins
from gqnbench.cli import main
from gqnbench.mainjob import MainJob
from gqnbench.models import build_model, list_models
from gqnbench.plugins import ENV_VAR, PluginError, load_plugins
from gqnbench.presets import get_preset

PLUGINS = Path(__file__).parent / "plugins"
MYVARIANT = PLUGINS / "myvariant.py"
FIXTURE_MODULES = (
    "myvariant",
    "broken_no_predict",
    "broken_shape",
    "gqnbench_myvariant_ep",
    "gqnbench_broken_ep",
    "tinyonly",
    "empty",
)


def _forget_modules() -> None:
    for name in FIXTURE_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture(autouse=True)
def clean_plugins(monkeypatch):
    """Every test starts with no plugin loaded and no $GQNBENCH_PLUGINS, and leaves none behind."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    plugins.reset_for_tests()
    _forget_modules()
    yield
    plugins.reset_for_tests()
    _forget_modules()


@pytest.fixture
def entry_point_package(tmp_path, monkeypatch):
    """A throwaway installed package whose entry point in ``gqnbench.models`` is the fixture plugin."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "gqnbench_myvariant_ep.py").write_text(MYVARIANT.read_text())
    info = site / "gqnbench_myvariant_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gqnbench-myvariant-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gqnbench.models]\nmyvariant = gqnbench_myvariant_ep\n")
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    plugins.reset_for_tests()
    return site


@pytest.fixture
def data_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("GQNBENCH_CACHE", str(cache))
    return cache


# --- loading and the interface check ------------------------------------------------------------------


def test_plugin_file_registers_with_a_config_at_every_preset():
    assert load_plugins([str(MYVARIANT)]) == ["myvariant"]
    assert "myvariant" in list_models()
    assert str(MYVARIANT.resolve()) in plugins._env_specs()  # passed on to worker processes
    for name in ("tiny", "cpu", "paper"):
        preset = get_preset(name)
        assert preset.model_config("myvariant") == preset.model_config("metagqn")
    # Overrides reach it by its own section and through model.
    tiny = get_preset("tiny", {"myvariant.z_channels": 8, "model.num_layers": 3})
    assert tiny.model_config("myvariant").z_channels == 8 and tiny.model_config("myvariant").num_layers == 3
    assert tiny.model_config("metagqn").z_channels == 4


def test_fixture_plugin_averages_the_context_instead_of_summing():
    load_plugins([str(MYVARIANT)])
    cfg = get_preset("tiny").model_config("myvariant")
    mean_model, sum_model = build_model("myvariant", cfg), build_model("metagqn", cfg)
    sum_model.load_state_dict(mean_model.state_dict())  # same parameters: only the aggregation differs
    images = torch.rand(5, 3, 16, 16)
    viewpoints = torch.rand(5, 7)
    scene = torch.tensor([0, 0, 0, 1, 1])  # three views of scene 0, two of scene 1
    r_sum = sum_model.representation(images, viewpoints, scene, 2)
    r_mean = mean_model.representation(images, viewpoints, scene, 2)
    torch.testing.assert_close(r_mean[0], r_sum[0] / 3)
    torch.testing.assert_close(r_mean[1], r_sum[1] / 2)


def test_plugin_by_module_name_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "myvariant.py").write_text(MYVARIANT.read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_plugins(["myvariant"]) == ["myvariant"]


def test_entry_point_plugin_is_found_without_flags(entry_point_package):
    assert "myvariant" in get_preset("tiny").models  # get_preset loads the plugins, as every harness does
    assert "myvariant" in list_models()
    assert plugins.PLUGIN_MODELS["myvariant"] == "entry point myvariant = gqnbench_myvariant_ep"


def test_loading_a_plugin_changes_no_seed():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_plugins([str(MYVARIANT)])  # builds and runs the model once to check it
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("broken_no_predict.py", "does not implement predict(episode, use_mean=False) -> [B, K, 3, H, W] tensor"),
        ("broken_shape.py", "predict() returned shape [4, 3, 16, 16], expected [2, 2, 3, 16, 16]"),
    ],
)
def test_broken_plugin_gets_one_clear_error(plugin, message, capsys):
    with pytest.raises(PluginError, match=r"model '\w+' \(broken_\w+\.\w+\)") as info:
        load_plugins([str(PLUGINS / plugin)])
    assert message in str(info.value)
    assert list_models() == ["gqn", "metagqn"]  # the broken model is not left registered
    plugins.reset_for_tests()
    _forget_modules()
    assert main(["--plugin", str(PLUGINS / plugin), "models", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_plugin_that_fails_to_import_or_registers_nothing(tmp_path, capsys):
    (tmp_path / "typo.py").write_text("import gqnbench.models\nraise RuntimeError('oops')\n")
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(PluginError, match="could not be imported: RuntimeError: oops"):
        load_plugins([str(tmp_path / "typo.py")])
    with pytest.raises(PluginError, match="registered no model"):
        load_plugins([str(tmp_path / "empty.py")])
    with pytest.raises(PluginError, match="does not exist"):
        load_plugins([str(tmp_path / "missing.py")])
    assert main(["models", "--plugin"]) == 2
    assert "--plugin needs" in capsys.readouterr().err


def test_broken_entry_point_warns_and_is_left_out(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "gqnbench_broken_ep.py").write_text((PLUGINS / "broken_shape.py").read_text())
    info = site / "gqnbench_broken_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gqnbench-broken-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gqnbench.models]\nflatpredict = gqnbench_broken_ep\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_for_tests()
    assert main(["models", "--preset", "tiny"]) == 0
    captured = capsys.readouterr()
    assert "warning: plugin (entry point flatpredict = gqnbench_broken_ep) is not available" in captured.err
    assert "predict() returned shape" in captured.err
    assert "not available (entry point flatpredict" in captured.out
    assert "flatpredict" not in list_models()


def test_plugin_with_configs_for_some_presets_only(tmp_path, capsys):
    (tmp_path / "tinyonly.py").write_text(
        "from gqnbench.models import ModelConfig, register_model\n"
        "from gqnbench.models.gqn import GQN\n"
        "cfg = ModelConfig(image_size=16, hidden_channels=4, r_channels=8, num_layers=1, z_channels=2)\n"
        "register_model('tinyonly', 'a GQN with tiny sizes only', config={'tiny': cfg})(GQN)\n"
    )
    assert main(["--plugin", str(tmp_path / "tinyonly.py"), "models"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("tinyonly ")}
    assert "no config at this preset" in rows["cpu"] and "no config at this preset" in rows["paper"]
    assert "16x16, L=1, hidden=4" in rows["tiny"]
    with pytest.raises(KeyError, match="preset 'cpu' has no config for model 'tinyonly'"):
        MainJob(preset="cpu", out=tmp_path / "job", models=("gqn", "tinyonly"))
    MainJob(preset="tiny", out=tmp_path / "job", models=("gqn", "tinyonly"))


# --- through the commands -------------------------------------------------------------------------------


def test_models_command_lists_the_plugin_at_every_preset(capsys):
    assert main(["--plugin", str(MYVARIANT), "models"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("myvariant ")]
    assert {row[1] for row in rows} == {"cpu", "paper", "paper-short", "tiny"}
    paper = next(row for row in rows if row[1] == "paper")
    assert paper[2] == "17,074,179"  # metagqn's sizes; the mean adds no parameters
    assert "myvariant: metagqn, context mean instead of sum [plugin: --plugin" in out


def _through_train_costs_profile(flags: list[str], out: Path) -> None:
    """``train``, ``costs --quick`` and ``profile`` of myvariant at the tiny preset, as a user runs them."""
    assert main([*flags, "train", "--model", "myvariant", "--preset", "tiny", "--steps", "4", "--out", str(out / "train"),
                 "--set", "train.eval_every=4", "--no-progress"]) == 0  # fmt: skip
    (run_file,) = (out / "train" / "runs").glob("myvariant-tiny-*seed0.json")
    run = json.loads(run_file.read_text())
    assert run["model"] == "myvariant" and run["status"] == "completed"
    # costs --quick, the sections that do not start processes or time for long (the main job test runs the rest)
    assert main([*flags, "costs", "--preset", "tiny", "--quick", "--models", "myvariant", "--out",
                 str(out / "costs.json"), "--sections", "params", "flops", "reference", "numerics"]) == 0  # fmt: skip
    costs = json.loads((out / "costs.json").read_text())
    assert costs["params"]["myvariant"]["used_by_objective"] > 0
    assert costs["flops"]["myvariant"] and costs["numerics"][0]["model"] == "myvariant"
    assert main([*flags, "profile", "--model", "myvariant", "--preset", "tiny", "--steps", "1", "--warmup", "1",
                 "--plain-rounds", "1", "--no-peak", "--out", str(out / "profile")]) == 0  # fmt: skip
    (case,) = json.loads((out / "profile" / "profile.json").read_text())["cases"]
    assert case["model"] == "myvariant"  # its module groups became the phases
    assert {"representation", "inference_core", "generation_core", "heads"} <= {p["phase"] for p in case["phases"]}


def test_plugin_flag_runs_train_costs_and_profile(tmp_path, data_cache):
    _through_train_costs_profile(["--plugin", str(MYVARIANT)], tmp_path)


def test_entry_point_plugin_runs_train_costs_and_profile(tmp_path, data_cache, entry_point_package):
    _through_train_costs_profile([], tmp_path)
    # A fresh process (as a spawned training worker is) finds it too, by name alone.
    code = "from gqnbench.models import build_model; print(type(build_model('myvariant')).__name__)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(entry_point_package), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip() == "MeanMetaGQN", proc.stderr


@pytest.mark.slow  # the whole tiny main job with three models: 1.5-2.5 minutes on 2 cores
def test_main_job_and_report_with_three_models(tmp_path, data_cache):
    """The README's command (without the benchmark stage): every stage with myvariant, a row and a curve for it."""
    out = tmp_path / "report"
    argv = ["--plugin", str(MYVARIANT), "run", "--preset", "tiny", "--quick", "--models", "gqn", "metagqn",
            "myvariant", "--skip", "benchmarks", "--out", str(out), "--cache", str(data_cache)]  # fmt: skip
    assert main(argv) == 0
    results = out / "results"
    ttt = json.loads((results / "time_to_target" / "time_to_target.json").read_text())
    assert {r["model"] for r in ttt["runs"]} == {"gqn", "metagqn", "myvariant"}
    sweep = json.loads((results / "sweep" / "sweep_model.z_channels.json").read_text())
    assert "myvariant" in {r["model"] for r in sweep["runs"]}
    costs = json.loads((results / "costs.json").read_text())
    assert "myvariant" in costs["params"] and "myvariant" in costs["memory"]
    profile = json.loads((results / "profile.json").read_text())
    assert "myvariant" in json.dumps(profile)
    samples = json.loads((results / "samples.json").read_text())
    assert "myvariant" in json.dumps(samples)
    # The report: a Table 1 row (no study numbers) and a curve for the plugin.
    md = (out / "report.md").read_text()
    # Table 1 (compact): no study numbers for it, ours beside the study's two models
    assert re.search(r"\| myvariant \| — \| [\d,]+ / [\d,]+ \| — \| [\d.,]+ \| — / [\d.]+ \|", md)
    summary = (out / "tables" / "table1_summary.csv").read_text()
    assert "myvariant" in summary and "GQN" in summary
    curve_tables = [p for p in (out / "tables").glob("*.csv") if "myvariant" in p.read_text()]
    assert any("figure6" in p.name or "curve" in p.name for p in curve_tables), sorted(p.name for p in curve_tables)
    provenance = json.loads((out / "provenance.json").read_text())
    assert any(a["artifact"].startswith("figures/figure6") for a in provenance["artifacts"])


def test_palette_gives_every_model_its_own_stable_colour():
    from gqnbench.report.plotting import MODEL_PALETTE, palette_for

    colours = palette_for(["GQN", "proposed (metagqn)", "myvariant", "another"])
    assert colours["GQN"] == MODEL_PALETTE["GQN"] and len(set(colours.values())) == 4
    assert palette_for(["myvariant"])["myvariant"] == colours["myvariant"]  # the same colour in every figure


def test_readme_shows_the_fixture_plugin_and_the_tested_commands():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code == MYVARIANT.read_text()  # the README's example is the tested fixture, verbatim
    assert (
        "gqnbench --plugin tests/plugins/myvariant.py run --preset tiny --quick --models gqn metagqn myvariant"
        in section
    )
    assert "gqnbench --plugin tests/plugins/myvariant.py models --preset tiny" in section
