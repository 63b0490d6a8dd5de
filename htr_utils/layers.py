"""Which parameters make up a "layer": Conv/Linear layers in forward order, and middle-layer rules."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CURVATURE_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_groups(
    model: nn.Module,
    include_bias: bool = False,
    example_input: torch.Tensor | None = None,
) -> "OrderedDict[str, list[str]]":
    """Ordered ``{layer name: [parameter names]}`` for every Conv/Linear layer of ``model``.

    The paper's layer Hessian is the block of the weight tensor of each Conv2d / Linear
    layer, so by default each group holds the weight only; ``include_bias=True`` adds the
    bias. Layers are listed in registration order, which is forward order for the models
    of this project; pass ``example_input`` to order them by an actual forward pass instead
    (layers never called are then dropped).
    """
    found: "OrderedDict[str, list[str]]" = OrderedDict()
    for name, module in model.named_modules():
        if not isinstance(module, CURVATURE_LAYER_TYPES):
            continue
        names = []
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or (pname == "bias" and not include_bias):
                continue
            names.append(f"{name}.{pname}" if name else pname)
        if names:
            found[name] = names
    if example_input is None:
        return found
    return OrderedDict((name, found[name]) for name in _forward_order(model, example_input) if name in found)


def _forward_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of Conv/Linear modules in the order a forward pass calls them (first call counts)."""
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, CURVATURE_LAYER_TYPES):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: order.append(name) if name not in order else None))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
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
