"""Issue-30 verdicts (spectra_verdicts) on constructed runs and readings: the wiring from records to the rules."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from htr_utils.study import spectra_verdicts as sv
from htr_utils.study.verdicts import Verdict


def _run(model: str, activation: str, epochs: list[int], ggn_scale: float):
    """A run whose Hess top spectrum moves with the epoch (λ_k = 100 e / k); G = ggn_scale × Hess at each epoch."""
    metrics = pd.DataFrame({"epoch": range(1, max(epochs) + 1), "train_loss": 0.5, "train_acc": 0.9, "test_acc": 0.8})

    def rec(e):
        top = tuple(100.0 * e / k for k in range(1, 31))
        full = lambda s: SimpleNamespace(top=tuple(s * t for t in top),  # noqa: E731
                                         density=SimpleNamespace(nodes=np.array([-1.0, 1.0])))
        return SimpleNamespace(kinds={"hessian": SimpleNamespace(full=full(1.0)), "ggn": SimpleNamespace(full=full(ggn_scale)),
                                      "residual": SimpleNamespace(full=full(0.01))})

    return SimpleNamespace(config=SimpleNamespace(dataset="digits", model=model, model_kwargs={"activation": activation}),
                           metrics=metrics, curvature_epochs=lambda: [0] + epochs, curvature=rec)


def test_c2_network_verdict_relu_networks_decide_and_the_far_epoch_control_fails():
    runs = {"lenet": _run("lenet", "relu", [1, 5, 10, 20], 0.98), "vgg": _run("vgg11_bn", "relu", [3, 15, 30], 0.97),
            "gelu": _run("lenet", "gelu", [1, 5, 10, 20], 0.7)}
    table = sv.gauss_newton_control_table(runs)
    lenet = table[table["run"] == "lenet"]
    assert list(lenet["control_epoch"]) == [20, 20, 20, 1]
    assert np.allclose(lenet["a_control"], [18.6, 2.92, 0.96, 0.951])        # |G_far − Hess_e| / Hess_e, scale 0.98 G
    assert list(table.groupby("run", sort=False)["decides"].first()) == [True, True, False]
    result = sv.c2_network_verdict(table, {"lenet": 1e-3, "vgg": 1e-3, "gelu": 1e-3})
    assert result.verdict == Verdict.REPRODUCED
    assert result.details["per_network"]["gelu"] == "not reproduced" and "extension" in result.measured
    bad = {**runs, "vgg": _run("vgg11_bn", "relu", [3, 15, 30], 0.6)}
    assert sv.c2_network_verdict(sv.gauss_newton_control_table(bad), {"lenet": 1e-3, "vgg": 1e-3}).verdict \
        == Verdict.NOT_REPRODUCED
