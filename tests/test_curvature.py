"""Curvature products against dense float64 Hessians / GGNs formed with torch.func."""
import pytest
import torch
import torch.nn.functional as F

from htr_utils import hvp_operator, layer_groups
from conftest import make_problem, rel_err

TOL = 1e-10


@pytest.mark.parametrize("kind", ["hessian", "ggn", "residual"])
@pytest.mark.parametrize("subset", [None, ["fc1.weight"], ["conv.weight", "fc2.weight"]])
def test_products_match_dense(problem, kind, subset):
    H = problem.dense_hessian(subset)
    G = problem.dense_ggn(subset)
    dense = {"hessian": H, "ggn": G, "residual": H - G}[kind]
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), params=subset, kind=kind)
    assert op.dim == dense.shape[0]
    V = torch.randn(op.dim, 4, dtype=torch.double)
    assert rel_err(op.matmat(V), dense @ V) < TOL
    assert rel_err(op.matvec(V[:, 0]), dense @ V[:, 0]) < TOL
    assert rel_err(op @ V[:, 1], dense @ V[:, 1]) < TOL


@pytest.mark.parametrize("kind", ["hessian", "ggn", "residual"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_matmat_chunking_and_loop_agree(problem, kind, chunk):
    H, G = problem.dense_hessian(), problem.dense_ggn()
    dense = {"hessian": H, "ggn": G, "residual": H - G}[kind]
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), kind=kind, vmap_chunk=chunk)
    V = torch.randn(op.dim, 7, dtype=torch.double)
    assert rel_err(op.matmat(V), dense @ V) < TOL


def test_hessian_is_ggn_plus_residual(problem):
    data = (problem.x, problem.y)
    ops = {k: hvp_operator(problem.model, F.cross_entropy, data, kind=k) for k in ("hessian", "ggn", "residual")}
    V = torch.randn(ops["hessian"].dim, 3, dtype=torch.double)
    assert rel_err(ops["ggn"].matmat(V) + ops["residual"].matmat(V), ops["hessian"].matmat(V)) < TOL


def test_ggn_is_positive_semidefinite(problem):
    G = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), kind="ggn").to_dense()
    assert torch.linalg.eigvalsh((G + G.T) / 2).min() > -1e-12


@pytest.mark.parametrize("kind", ["hessian", "ggn", "residual"])
@pytest.mark.parametrize("cache", [None, True, False])
def test_batches_equal_one_batch(problem, kind, cache):
    x, y = problem.x, problem.y
    whole = hvp_operator(problem.model, F.cross_entropy, (x, y), kind=kind)
    # Unequal batch sizes: the mean must weight each batch by its size.
    parts = hvp_operator(problem.model, F.cross_entropy, [(x[:2], y[:2]), (x[2:3], y[2:3]), (x[3:], y[3:])],
                         kind=kind, cache=cache)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    from_loader = hvp_operator(problem.model, F.cross_entropy, loader, kind=kind)
    v = torch.randn(whole.dim, dtype=torch.double)
    assert rel_err(parts.matvec(v), whole.matvec(v)) < TOL
    assert rel_err(from_loader.matvec(v), whole.matvec(v)) < TOL
    assert rel_err(parts.matvec(v), whole.matvec(v)) < TOL  # second pass (cached maps) too


def test_one_shot_iterator_is_materialised(problem):
    x, y = problem.x, problem.y
    op = hvp_operator(problem.model, F.cross_entropy, iter([(x[:4], y[:4]), (x[4:], y[4:])]))
    v = torch.randn(op.dim, dtype=torch.double)
    H = problem.dense_hessian()
    assert rel_err(op.matvec(v), H @ v) < TOL
    assert rel_err(op.matvec(v), H @ v) < TOL


def test_layer_block_is_diagonal_block_of_full_hessian(problem):
    H = problem.dense_hessian()
    names = [n for n, _ in problem.model.named_parameters()]
    sizes = [p.numel() for _, p in problem.model.named_parameters()]
    start = sum(sizes[: names.index("fc1.weight")])
    block = H[start:start + sizes[names.index("fc1.weight")]][:, start:start + sizes[names.index("fc1.weight")]]
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), params=["fc1.weight"])
    assert rel_err(op.to_dense(), block) < TOL


def test_training_mode_is_restored_and_eval_statistics_used():
    p = make_problem(train_mode=True)
    before = p.model.bn.running_mean.clone()
    op = hvp_operator(p.model, F.cross_entropy, (p.x, p.y))
    v = torch.randn(op.dim, dtype=torch.double)
    out = op.matvec(v)
    assert p.model.training and p.model.bn.training, "the model's own mode must be restored"
    assert torch.equal(before, p.model.bn.running_mean), "running statistics must not be updated"
    assert rel_err(out, p.dense_hessian() @ v) < TOL  # dense_hessian evaluates in eval mode


def test_scipy_view_matches(problem):
    from scipy.sparse.linalg import eigsh
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    top = eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    exact = torch.linalg.eigvalsh(problem.dense_hessian()).numpy()[-2:]
    assert abs(sorted(top)[1] - exact[1]) < 1e-8 and abs(sorted(top)[0] - exact[0]) < 1e-8


def test_double_backward_fallback_matches(problem, monkeypatch):
    import htr_utils.curvature as cur

    def no_forward_mode(*args, **kwargs):
        raise NotImplementedError("pretend this op has no forward-mode rule")
    monkeypatch.setattr(cur, "jvp", no_forward_mode)
    monkeypatch.setattr(cur, "linearize", no_forward_mode)
    H, G = problem.dense_hessian(), problem.dense_ggn()
    for kind, dense in (("hessian", H), ("ggn", G), ("residual", H - G)):
        op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), kind=kind)
        v = torch.randn(op.dim, dtype=torch.double)
        with pytest.warns(UserWarning, match="double-backward"):
            out = op.matvec(v)
        assert rel_err(out, dense @ v) < TOL
        assert rel_err(op.matvec(v), dense @ v) < TOL


def test_bad_input_messages(problem):
    data = (problem.x, problem.y)
    with pytest.raises(ValueError, match="unknown kind"):
        hvp_operator(problem.model, F.cross_entropy, data, kind="fisher")
    with pytest.raises(ValueError, match="valid names are: .*fc1.weight"):
        hvp_operator(problem.model, F.cross_entropy, data, params=["fc9.weight"])
    op = hvp_operator(problem.model, F.cross_entropy, data)
    with pytest.raises(ValueError, match=f"length {op.dim}"):
        op.matvec(torch.zeros(op.dim + 1, dtype=torch.double))
    with pytest.raises(ValueError, match="empty"):
        hvp_operator(problem.model, F.cross_entropy, [])
    with pytest.raises(ValueError, match="empty"):
        hvp_operator(problem.model, F.cross_entropy, (problem.x[:0], problem.y[:0]))
    with pytest.raises(ValueError, match="empty"):
        hvp_operator(problem.model, F.cross_entropy, [(problem.x[:0], problem.y[:0])])


def test_layer_groups_weights_and_biases(problem):
    groups = layer_groups(problem.model)
    assert list(groups) == ["conv", "fc1", "fc2"]
    assert groups["fc1"] == ["fc1.weight"]
    with_bias = layer_groups(problem.model, include_bias=True)
    assert with_bias["fc1"] == ["fc1.weight", "fc1.bias"]
    assert list(layer_groups(problem.model, example_input=problem.x[:1])) == ["conv", "fc1", "fc2"]
