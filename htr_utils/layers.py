"""Which parameters make up a "layer": Conv/Linear layers (or every parametrised module) in forward order, and middle-layer rules."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .curvature import eval_mode, exact_kernels

CURVATURE_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
MODULE_CHOICES = ("conv_linear", "all")
ROOT = "(model)"  # group name for parameters registered on the model itself (modules="all")


def _matches(module: nn.Module, modules: Any) -> bool:
    if modules == "conv_linear":
        return isinstance(module, CURVATURE_LAYER_TYPES)
    if modules == "all":
        return True
    return isinstance(module, modules)


def _is_bias(name: str) -> bool:
    """bias, bias_ih_l0, in_proj_bias, bias_k: "bias" is one of the name's underscore-separated words."""
    return "bias" in name.split("_")


def layer_groups(
    model: nn.Module,
    include_bias: bool = False,
    example_input: torch.Tensor | tuple | None = None,
    modules: str | tuple[type[nn.Module], ...] = "conv_linear",
) -> "OrderedDict[str, list[str]]":
    """Ordered ``{layer name: [parameter names]}``: the layers of ``model`` and the parameters of each.

    ``modules`` chooses what counts as a layer:

    * ``"conv_linear"`` (default): every Conv1d/2d/3d and Linear module (subclasses included,
      e.g. ``nn.MultiheadAttention``'s ``out_proj``). The paper's layer Hessian is the block
      of each such layer's weight. Embeddings, norms (BatchNorm, LayerNorm, GroupNorm),
      RNN / GRU / LSTM weights, ``nn.MultiheadAttention``'s ``in_proj_weight`` and any
      ``nn.Parameter`` held directly by a custom module are **left out**.
    * ``"all"``: every module that holds trainable parameters of its own (``recurse=False``):
      the above plus norms, embeddings, recurrent layers, attention in-projections and custom
      modules; parameters held by the model itself form the group ``"(model)"``.
    * a tuple of module classes: the modules of those types.

    Each group holds the weights; ``include_bias=True`` adds the biases (parameters with
    ``bias`` as a word of their name: ``bias``, ``bias_ih_l0``, ``in_proj_bias``). Frozen parameters (``requires_grad=False``)
    are left out. Names are canonical, as ``model.named_parameters()`` gives them and
    :func:`~htr_utils.hvp_operator` accepts: a parameter shared by several modules (tied
    weights) is listed once, by its canonical name, under the first module that registers it.
    Layers are listed in registration order, which is forward order for the models of this
    project; pass ``example_input`` (a tensor, or a tuple of positional inputs) to order them
    by an actual forward pass instead (in eval mode, without gradients; every submodule's mode
    is restored; layers whose module is never called are dropped — among them
    ``nn.MultiheadAttention``'s ``out_proj``, whose tensors the attention uses without calling it).

    For any other grouping, pass your own ``{name: [parameter names]}`` dict to
    :func:`~htr_utils.layerwise.layerwise_spectra` / ``layerwise_trace``, or a list of names
    to ``hvp_operator(params=...)``.
    """
    if not (modules in MODULE_CHOICES or (isinstance(modules, tuple) and modules
                                          and all(isinstance(t, type) and issubclass(t, nn.Module) for t in modules))):
        raise ValueError(f"modules must be one of {MODULE_CHOICES} or a non-empty tuple of nn.Module classes, "
                         f"got {modules!r}.")
    canonical = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    found: "OrderedDict[str, list[str]]" = OrderedDict()
    for name, module in model.named_modules():
        if not _matches(module, modules):
            continue
        names = []
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or (_is_bias(pname) and not include_bias) or id(p) in seen:
                continue
            seen.add(id(p))
            names.append(canonical[id(p)])
        if names:
            found[name or ROOT] = names
    if example_input is None:
        return found
    return OrderedDict((name, found[name]) for name in _forward_order(model, example_input, modules) if name in found)


def _forward_order(model: nn.Module, example_input: Any, modules: Any) -> list[str]:
    """Names of the chosen modules in the order a forward pass calls them (first call counts).

    Runs in eval mode without gradients; every submodule's own mode is restored afterwards.
    """
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if _matches(module, modules):
            key = name or ROOT
            hooks.append(module.register_forward_pre_hook(
                lambda m, i, key=key: order.append(key) if key not in order else None))
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad(), eval_mode(model), exact_kernels():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return order


def middle_layers(groups: "OrderedDict[str, list[str]]") -> list[str]:
    """Layer rule: parameter names of the middle half of ``groups``: layers with index i, L/4 <= i < 3L/4.

    With a single layer, that layer.
    """
    names = list(groups)
    n = len(names)
    chosen = [layer for i, layer in enumerate(names) if n / 4 <= i < 3 * n / 4] or names[n // 2: n // 2 + 1]
    return [p for layer in chosen for p in groups[layer]]


def middle_parameters_authors(model: nn.Module) -> list[str]:
    """The authors' rule: trainable parameter tensors whose index in ``named_parameters()`` lies in [n/4, 3n/4]."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    n = len(names)
    return [name for i, name in enumerate(names) if n / 4 <= i <= 3 * n / 4]
