"""Numerics of the fast paths (bf16/fp16 autocast, torch.compile, the step's fast path) against an fp64
reference, TorchBench style.

The loss and every parameter gradient are computed three times on the same weights, the
same batch and the same latent noise: in fp64 (the reference), in plain fp32 eager (the
baseline), and on the fast path. Each is compared with the fp64 reference, never with
each other (SPEC section 8):

    err(x) = ||x - ref|| / ||ref||      (loss: |l - l_ref| / |l_ref|; gradients: all parameters as one vector)
    pass  <=> err(fast) <= multiplier * err(fp32 eager) + floor[dtype]

for the loss and for the gradients. The fp32 term lets a compiled fp32 path be as
accurate as eager fp32 within a factor; the per-dtype floor is what a correct bf16/fp16
path costs (bf16 has an 8-bit mantissa, relative rounding 2^-9 = 2e-3 per op; measured
on these models at the tiny and cpu presets: loss 1e-4..2e-3, gradients 1e-2..2e-2). An fp32
fast path whose convolutions or matmuls run as TF32 (a 10-bit mantissa, like fp16) is judged
with the ``tf32`` floor; the fp64 reference and the fp32 baseline always run without TF32.
A fast path that is wrong (a dropped term, a perturbed weight, a broken kernel) misses
both bounds by orders of magnitude.

Same noise: the models draw z with ``torch.randn_like``, whose CPU kernel gives different
numbers for different dtypes from the same seed. During a check ``torch.randn_like`` is
swapped for a version that draws fp32 noise and casts it, and the RNG is reseeded before
every forward, so fp64, fp32 and bf16 see the same z (rounded to their dtype). The swap
is a plain Python function, so dynamo traces it; inductor runs with ``fallback_random``
so compiled code draws from the same eager generator.

The check sits beside the step (it imports no harness), so the training loop's precision
choice (:mod:`gqnbench.precision`) runs it too.

``costs.json`` field: ``numerics = [row]`` with row = the dict of :class:`NumericsResult`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from gqnbench.data.episode import Episode
from gqnbench.models import GQNFamilyModel, build_model
from gqnbench.presets import Preset, get_preset
from gqnbench.step import FastPath, TrainStep, build_step, check_precision, resolve_device, tf32_in_use

# Error floors per fast-path arithmetic (relative errors; see the module docstring for how they were chosen).
LOSS_FLOOR = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 1e-2, "fp16": 5e-3}
GRAD_FLOOR = {"fp32": 1e-4, "tf32": 3e-2, "bf16": 6e-2, "fp16": 3e-2}

_torch_randn_like = torch.randn_like


def _fp32_randn_like(x: torch.Tensor, **kwargs) -> torch.Tensor:
    # Same numbers for every dtype: draw in fp32 (the generator's fp32 stream), then cast.
    return torch.randn(x.shape, dtype=torch.float32, device=x.device).to(kwargs.get("dtype") or x.dtype)


@contextlib.contextmanager
def same_noise_across_dtypes() -> Iterator[None]:
    """Make ``torch.randn_like`` dtype-independent for the duration (see the module docstring)."""
    import torch._inductor.config as inductor_config

    torch.randn_like = _fp32_randn_like
    try:
        with inductor_config.patch(fallback_random=True):
            yield
    finally:
        torch.randn_like = _torch_randn_like


@dataclass
class NumericsResult:
    model: str
    preset: str
    dtype: str
    compiled: bool
    passed: bool
    loss_ref: float
    loss_fast: float
    loss_err_fp32: float
    loss_err_fast: float
    loss_bound: float
    grad_err_fp32: float
    grad_err_fast: float
    grad_bound: float
    grad_cosine: float
    multiplier: float
    batch: int
    reason: str = ""
    fast_path: str = "off"  # the step's fast path (gqnbench.step.FastPath spec) on the checked path
    floor: str = ""  # which arithmetic's floor judged it: fp32, tf32, bf16 or fp16
    # Each loss term on its own (reconstruction, KL): {term: {ref, fast, err_fp32, err_fast, bound}}.
    # The total can hide a wrong term (the KL is small beside the reconstruction).
    terms: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


Measured = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]  # loss, flat gradients, loss parts (fp64)


def _loss_and_grads(trainer: TrainStep, episode: Episode, seed: int, device: torch.device) -> Measured:
    """The step's loss, flattened gradients (zeros where none) and loss parts, all fp64, with the RNG reseeded."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    params = list(trainer.model.parameters())
    terms = trainer.forward_loss(episode)
    grads = torch.autograd.grad(terms.loss, params, allow_unused=True)
    flat = torch.cat(
        [(g if g is not None else torch.zeros_like(p)).detach().double().flatten() for g, p in zip(grads, params)]
    )
    parts = {"reconstruction": terms.reconstruction.detach().double(), "kl": terms.kl.detach().double()}
    return terms.loss.detach().double(), flat, parts


def _term_report(
    ref: dict[str, torch.Tensor],
    fp32: dict[str, torch.Tensor],
    fast: dict[str, torch.Tensor],
    multiplier: float,
    floor: float,
) -> dict[str, dict[str, float]]:
    report = {}
    for name, value in ref.items():
        err_32, err_fast = _rel(fp32[name], value), _rel(fast[name], value)
        report[name] = {
            "ref": value.item(),
            "fast": fast[name].item(),
            "err_fp32": err_32,
            "err_fast": err_fast,
            "bound": multiplier * err_32 + floor,
        }
    return report


def _failures(
    loss_fast: torch.Tensor,
    grad_fast: torch.Tensor,
    loss: tuple[float, float],
    grad: tuple[float, float],
    terms: dict[str, dict[str, float]],
) -> list[str]:
    """Why the fast path fails (empty: it passes): non-finite, an error above its bound, a negative KL."""
    reasons = []
    if not bool(torch.isfinite(loss_fast).all() and torch.isfinite(grad_fast).all()):
        reasons.append("non-finite loss or gradient on the fast path")
    for name, (err, bound) in (("loss", loss), ("gradient", grad)):
        if err > bound:
            reasons.append(f"{name} error {err:.3g} > bound {bound:.3g}")
    for name, term in terms.items():
        if term["err_fast"] > term["bound"]:
            reasons.append(f"{name} error {term['err_fast']:.3g} > bound {term['bound']:.3g}")
    if terms.get("kl", {}).get("fast", 0.0) < 0.0:
        reasons.append(f"negative KL on the fast path ({terms['kl']['fast']:.3g})")
    return reasons


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    denom = ref.norm().item()
    return (x - ref).norm().item() / denom if denom > 0 else (x - ref).norm().item()


def check_numerics(
    model: str,
    preset: str | Preset = "tiny",
    dtype: str = "bf16",
    compiled: bool = False,
    batch: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    multiplier: float = 3.0,
    num_context: int = 3,
    compile_backend: str = "inductor",
    fast_model_hook: Callable[[GQNFamilyModel], None] | None = None,
    fast_path: str | FastPath = "off",
) -> NumericsResult:
    """Compare the fast path (``dtype`` autocast, optionally compiled, with the step's ``fast_path``) with fp64;
    see the module docstring.

    ``fast_model_hook`` edits the fast path's copy of the model before it runs (tests use
    it to build a deliberately wrong fast path that must fail).
    """
    preset_obj = get_preset(preset) if isinstance(preset, str) else preset
    dev = resolve_device(device)
    check_precision(dtype, dev)
    batch = batch or preset_obj.train.batch_size
    base, episode = _model_and_batch(model, preset_obj, batch, num_context, seed, dev)
    reference = copy.deepcopy(base).double()
    fast_model = copy.deepcopy(base)
    if fast_model_hook is not None:
        fast_model_hook(fast_model)
    if compiled:
        torch._dynamo.reset()
    # The training step's forward (objective, autocast, compile, fast path, flush-to-zero), gradients taken by hand.
    # The reference and the fp32 baseline run strictly in their own precision (no TF32).
    step_of = functools.partial(build_step, train=preset_obj.train, device=dev, compile_backend=compile_backend)
    strict = FastPath(tf32=False) if dev.type == "cuda" else FastPath()
    noise_seed = seed + 1
    with same_noise_across_dtypes():
        ref_step = step_of(reference, precision="fp32", compile=False, fast_path=strict)
        ref = _loss_and_grads(ref_step, episode.to(dev, torch.float64), noise_seed, dev)
        fp32 = _loss_and_grads(
            step_of(base, precision="fp32", compile=False, fast_path=strict), episode, noise_seed, dev
        )
        fast_step = step_of(fast_model, precision=dtype, compile=compiled, fast_path=fast_path)
        # One call first: compiles a fused cell and captures a CUDA graph (which draws noise of its own),
        # so the measured call replays what trains, on the reference's noise.
        _loss_and_grads(fast_step, episode, noise_seed, dev)
        fast = _loss_and_grads(fast_step, episode, noise_seed, dev)
    floor = dtype
    if dtype == "fp32" and any(tf32_in_use(dev, fast_step.fast.tf32).values()):
        floor = "tf32"
    return NumericsResult(
        model=model,
        preset=preset_obj.name,
        dtype=dtype,
        compiled=compiled,
        multiplier=multiplier,
        batch=batch,
        fast_path=fast_step.fast.spec(),
        floor=floor,
        **_judge(ref, fp32, fast, floor, multiplier),
    )


def _model_and_batch(
    model: str, preset: Preset, batch: int, num_context: int, seed: int, device: torch.device
) -> tuple[GQNFamilyModel, Episode]:
    cfg = preset.model_config(model)
    torch.manual_seed(seed)
    net = build_model(model, cfg).to(device)
    generator = torch.Generator().manual_seed(seed)
    return net, Episode.random(batch, cfg.image_size, num_context, generator=generator, device=device)


def _judge(ref: Measured, fp32: Measured, fast: Measured, floor: str, multiplier: float) -> dict:
    """The :class:`NumericsResult` fields that compare the fp32 and fast paths with the fp64 reference.

    ``floor``: the arithmetic whose error floor applies (fp32, tf32, bf16 or fp16).
    """
    (loss_ref, grad_ref, terms_ref), (loss_32, grad_32, terms_32), (loss_fast, grad_fast, terms_fast) = ref, fp32, fast
    terms = _term_report(terms_ref, terms_32, terms_fast, multiplier, LOSS_FLOOR[floor])
    loss_err_32, loss_err_fast = _rel(loss_32, loss_ref), _rel(loss_fast, loss_ref)
    grad_err_32, grad_err_fast = _rel(grad_32, grad_ref), _rel(grad_fast, grad_ref)
    loss_bound = multiplier * loss_err_32 + LOSS_FLOOR[floor]
    grad_bound = multiplier * grad_err_32 + GRAD_FLOOR[floor]
    reasons = _failures(loss_fast, grad_fast, (loss_err_fast, loss_bound), (grad_err_fast, grad_bound), terms)
    return {
        "passed": not reasons,
        "loss_ref": loss_ref.item(),
        "loss_fast": loss_fast.item(),
        "loss_err_fp32": loss_err_32,
        "loss_err_fast": loss_err_fast,
        "loss_bound": loss_bound,
        "grad_err_fp32": grad_err_32,
        "grad_err_fast": grad_err_fast,
        "grad_bound": grad_bound,
        "grad_cosine": torch.nn.functional.cosine_similarity(grad_fast, grad_ref, dim=0).item(),
        "reason": "; ".join(reasons),
        "terms": terms,
    }


def perturb_weights(scale: float = 0.05, seed: int = 0) -> Callable[[GQNFamilyModel], None]:
    """A fast-path hook that adds ``scale`` x std relative noise to every weight: a wrong fast path."""

    def hook(model: GQNFamilyModel) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
                p.add_(noise * scale * (p.std() if p.numel() > 1 else p.abs() + 1e-3))

    return hook
