"""Model plugins: a researcher's GQN variant in every harness, command and the report.

A plugin is a Python module that registers one or more models with
:func:`gqnbench.models.register_model`, giving each a factory (``factory(ModelConfig) ->
model``), a short description and its config at each preset (``config=``: a mapping
preset name -> ``ModelConfig``, or a function of the preset such as
``lambda p: p.model_config("metagqn")``). The model implements what the suite calls (see
:class:`gqnbench.models.GQNFamilyModel`): ``loss(episode, step) -> LossOutput``,
``predict(episode, use_mean=False) -> [B, K, 3, H, W]``, ``module_groups() -> {name:
[submodules]}`` and ``pixel_sigma(step) -> float``; ``forward(episode, step)`` returns the
scalar loss (GQNFamilyModel provides it).

Plugins are found two ways, both before a command runs:

- the entry-point group ``gqnbench.models`` of any installed package
  (``[project.entry-points."gqnbench.models"] myvariant = "mypkg.gqn_variant"``); the entry
  point names the module that registers (or a zero-argument function that does);
- ``gqnbench --plugin MODULE_OR_FILE.py COMMAND ...`` (``--plugin`` may also follow the
  command; repeatable). A module name is imported with the current folder on the path.

``--plugin`` modules are passed on to the processes a command starts (training workers, the
benchmark run) in ``$GQNBENCH_PLUGINS``; :func:`ensure_plugins` loads both sources once per
process and is called by :func:`gqnbench.presets.get_preset`, which every harness goes
through. Every plugin model is checked once when it is loaded (:func:`check_model`: its tiny
config, a batch of two scenes, also on the meta device the parameter counts use); a model
that breaks the interface gets one :class:`PluginError` naming the missing method or the
wrong output shape.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "gqnbench.models"
ENV_VAR = "GQNBENCH_PLUGINS"
REQUIRED_METHODS = {
    "loss": "loss(episode, step=0) -> LossOutput",
    "predict": "predict(episode, use_mean=False) -> [B, K, 3, H, W] tensor",
    "module_groups": "module_groups() -> {group name: [submodules]}",
    "pixel_sigma": "pixel_sigma(step) -> float",
}
CHECK_PRESETS = ("tiny", "cpu", "paper")  # the first one a plugin has a config for sizes the load-time check


class PluginError(ValueError):
    """A plugin that cannot be imported, registers nothing, or breaks the model interface."""


_loaded = False
_loading = False
_loaded_specs: list[str] = []
PLUGIN_MODELS: dict[str, str] = {}  # model name -> where it came from ("--plugin x.py", "entry point a = b")
BROKEN: dict[str, str] = {}  # entry point -> why it is not available


# --- loading -------------------------------------------------------------------------------------------


def ensure_plugins() -> None:
    """Load the entry-point plugins and those named in ``$GQNBENCH_PLUGINS``, once per process."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    _loading = True
    try:
        _load_entry_points()
        for spec in _env_specs():
            if spec not in _loaded_specs:
                load_plugin(spec)
    finally:
        _loading = False
        _loaded = True


def load_plugins(specs: Sequence[str]) -> list[str]:
    """Load ``--plugin`` modules (and the entry points); returns the model names they registered.

    Each spec is also added to ``$GQNBENCH_PLUGINS`` so that processes this one starts load it.
    """
    ensure_plugins()
    names: list[str] = []
    for spec in specs:
        spec = _normalise(spec)
        if spec not in _loaded_specs:
            names += load_plugin(spec)
        _remember_in_env(spec)
    return names


def load_plugins_from_argv(argv: Sequence[str]) -> list[str]:
    """Load every ``--plugin X`` / ``--plugin=X`` of a command line; returns the command line without them."""
    specs, rest = [], []
    items = iter(argv)
    for arg in items:
        if arg == "--":
            rest += [arg, *items]
            break
        if arg == "--plugin":
            value = next(items, None)
            if value is None or value.startswith("-"):
                raise PluginError("--plugin needs a module name or a .py file")
            specs.append(value)
        elif arg.startswith("--plugin="):
            specs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    load_plugins(specs)
    return rest


def load_plugin(spec: str, source: str | None = None) -> list[str]:
    """Import one plugin module (a dotted name or a .py file) and check the models it registers."""
    from gqnbench.models import list_models

    spec = _normalise(spec)
    before = set(list_models())
    module_name = _module_name(spec)
    seen = module_name in sys.modules
    try:
        _import(spec, module_name)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while importing a plugin is the plugin's
        raise PluginError(f"plugin {spec!r} could not be imported: {type(exc).__name__}: {exc}") from exc
    _loaded_specs.append(spec)
    new = [m for m in list_models() if m not in before]
    if not new and not seen:
        raise PluginError(
            f"plugin {spec!r} was imported but registered no model (decorate its model with "
            "gqnbench.models.register_model(name, description, config=...))"
        )
    _check_new(new, source or f"--plugin {spec}")
    return new


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    from gqnbench.models import list_models

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point {ep.name} = {ep.value}"
        before = set(list_models())
        try:
            obj = ep.load()
            if inspect.isfunction(obj):
                obj()
            _check_new([m for m in list_models() if m not in before], label)
        except Exception as exc:  # noqa: BLE001 - one broken installed package must not stop every command
            BROKEN[label] = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
            print(f"gqnbench: warning: plugin ({label}) is not available: {BROKEN[label]}", file=sys.stderr)


def _check_new(names: list[str], source: str) -> None:
    from gqnbench.models import unregister_model

    for name in names:
        try:
            check_model(name)
        except Exception:
            for other in names:
                unregister_model(other)
            raise
        PLUGIN_MODELS[name] = source


def _normalise(spec: str) -> str:
    spec = spec.strip()
    if _is_file(spec):
        return str(Path(spec).expanduser().resolve())
    return spec


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _module_name(spec: str) -> str:
    return Path(spec).stem if _is_file(spec) else spec


def _import(spec: str, module_name: str) -> types.ModuleType:
    if not _is_file(spec):
        try:
            return importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            cwd = os.getcwd()
            if cwd in sys.path or not (exc.name and spec.startswith(exc.name)):
                raise
            sys.path.insert(0, cwd)  # as `python -m` would: the researcher's module next to them
            return importlib.import_module(spec)
    path = Path(spec)
    if not path.is_file():
        raise PluginError(f"plugin file {spec} does not exist")
    existing = sys.modules.get(module_name)
    if existing is not None and getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
        return existing
    if existing is not None:
        raise PluginError(f"plugin file {spec}: a module named {module_name!r} is already imported; rename the file")
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # so its classes pickle and re-import by name
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _env_specs() -> list[str]:
    return [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s]


def _remember_in_env(spec: str) -> None:
    specs = _env_specs()
    if spec not in specs:
        os.environ[ENV_VAR] = os.pathsep.join([*specs, spec])


def reset_for_tests() -> None:
    """Forget every plugin model and loaded module name (tests load plugins several ways in one process)."""
    global _loaded
    from gqnbench.models import unregister_model

    for name in PLUGIN_MODELS:
        unregister_model(name)
    PLUGIN_MODELS.clear()
    BROKEN.clear()
    _loaded_specs.clear()
    _loaded = False


# --- the interface check -------------------------------------------------------------------------------


def check_model(name: str, preset: str | None = None) -> None:
    """Build ``name`` at a small preset and run every method the suite calls on two scenes.

    Raises :class:`PluginError` naming the missing method, the wrong output or shape, or the
    exception a method raised. Runs under a forked RNG, so loading a plugin changes no seed.
    """
    import torch

    from gqnbench.presets import get_preset, list_presets

    names = [preset] if preset else [p for p in CHECK_PRESETS if p in list_presets()]
    cfg = None
    for preset_name in names:
        models = get_preset(preset_name).models
        if name in models:
            cfg = models[name]
            break
    if cfg is None:
        raise PluginError(f"model {name!r} has no config at preset(s) {', '.join(names)} (register_model's config=)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _build(name, cfg, "cpu")
        _check_methods(name, model)
        _check_outputs(name, model, cfg, "cpu")
        # The parameter counter runs one training step on the meta device (no memory): check it there too.
        with torch.device("meta"):
            meta_model = _build(name, cfg, "meta")
        _check_outputs(name, meta_model, cfg, "meta")


def _who(name: str, model: Any) -> str:
    return f"model {name!r} ({type(model).__module__}.{type(model).__qualname__})"


def _build(name: str, cfg: Any, device: str) -> Any:
    from torch import nn

    from gqnbench.models import build_model

    try:
        model = build_model(name, cfg)
    except Exception as exc:  # noqa: BLE001
        where = " on the meta device (used to count parameters without memory)" if device == "meta" else ""
        raise PluginError(f"model {name!r}: building it{where} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {name!r}: its factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _check_methods(name: str, model: Any) -> None:
    from gqnbench.models import GQNFamilyModel

    def implemented(method: str) -> bool:
        impl = getattr(type(model), method, None)
        return callable(impl) and impl is not getattr(GQNFamilyModel, method, None)

    missing = []
    for method, signature in REQUIRED_METHODS.items():
        # The base class's loss() is the two-part loss of a model that implements both parts.
        split = method == "loss" and implemented("loss_inputs") and implemented("core_loss")
        if not (implemented(method) or split):
            missing.append(signature)
    if missing:
        raise PluginError(f"{_who(name, model)} does not implement " + "; ".join(missing))


def _call(name: str, model: Any, what: str, fn: Any, device: str) -> Any:
    try:
        return fn()
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's exception, said once with where it came from
        where = " on the meta device (used to count parameters without memory)" if device == "meta" else ""
        raise PluginError(f"{_who(name, model)}: {what} failed{where}: {type(exc).__name__}: {exc}") from exc


def _check_outputs(name: str, model: Any, cfg: Any, device: str) -> None:
    import torch

    from gqnbench.data.episode import Episode

    who = _who(name, model)
    batch, queries, size = 2, 2, cfg.image_size
    episode = Episode.random(batch, size, 3, queries, generator=torch.Generator().manual_seed(0)).to(device)
    model.train()
    out = _call(name, model, "loss(episode, step=0)", lambda: model.loss(episode, 0), device)
    for field in ("loss", "reconstruction", "kl", "mean_image", "sigma"):
        if not hasattr(out, field):
            raise PluginError(
                f"{who}: loss() returned a {type(out).__name__} without .{field}; return gqnbench.models.LossOutput"
            )
    want_mean = (batch * queries, 3, size, size)
    if not isinstance(out.loss, torch.Tensor) or out.loss.dim() != 0:
        raise PluginError(f"{who}: loss().loss must be a scalar tensor, got shape {_shape(out.loss)}")
    if not isinstance(out.mean_image, torch.Tensor) or tuple(out.mean_image.shape) != want_mean:
        raise PluginError(
            f"{who}: loss().mean_image has shape {_shape(out.mean_image)}, expected {list(want_mean)} "
            f"(scenes x queries, 3, H, W) for {batch} scenes with {queries} queries at {size}x{size}"
        )
    if device == "cpu":
        if not torch.isfinite(out.loss):
            raise PluginError(f"{who}: loss() is not finite on a random batch ({out.loss.item()})")
        _call(name, model, "backward of loss().loss", out.loss.backward, device)
        model.zero_grad(set_to_none=True)
        forward = _call(name, model, "forward(episode, step=0)", lambda: model(episode, 0), device)
        if not isinstance(forward, torch.Tensor) or forward.dim() != 0:
            raise PluginError(f"{who}: forward(episode, step) must return the scalar loss, got shape {_shape(forward)}")
        sigma = _call(name, model, "pixel_sigma(0)", lambda: model.pixel_sigma(0), device)
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
            raise PluginError(f"{who}: pixel_sigma(step) must return a positive float, got {sigma!r}")
    want = (batch, queries, 3, size, size)
    model.eval()
    with torch.no_grad():
        for use_mean in (False, True):
            pred = _call(
                name,
                model,
                f"predict(episode, use_mean={use_mean})",
                lambda u=use_mean: model.predict(episode, u),
                device,
            )
            if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != want:
                raise PluginError(
                    f"{who}: predict() returned shape {_shape(pred)}, expected {list(want)} "
                    f"(scenes, queries, 3, H, W) for {batch} scenes with {queries} queries at {size}x{size}"
                )
    model.train()
    groups = _call(name, model, "module_groups()", model.module_groups, device)
    own = {id(m) for m in model.modules()}
    if not isinstance(groups, dict) or not groups:
        raise PluginError(f"{who}: module_groups() must return a non-empty dict {{group name: [submodules]}}")
    for group, modules in groups.items():
        if not isinstance(modules, (list, tuple)) or not all(id(m) in own for m in modules):
            raise PluginError(f"{who}: module_groups()[{group!r}] must be a list of the model's own submodules")


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return str(list(shape)) if shape is not None else f"a {type(value).__name__}"
