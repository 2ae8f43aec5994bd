"""hwr.tree: leaf-wise maps, structure checks, norms and dotted names."""

from typing import NamedTuple

import pytest
import torch

from hwr import tree


def _params() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "conv": {"kernel": torch.randn(4, 1, 3, 3, generator=g), "bias": torch.randn(4, generator=g)},
        "head": {"kernel": torch.randn(2, 4, generator=g), "bias": torch.randn(2, generator=g)},
    }


class Pair(NamedTuple):
    a: torch.Tensor
    b: list


def test_map_over_several_trees_combines_matching_leaves():
    x = _params()
    y = tree.map(lambda t: t * 2.0, x)
    w = tree.map(lambda t: t + 1.0, x)
    z = tree.map(lambda a, b, c: a - 10 * b + 100 * c, x, y, w)  # order matters: each argument is distinct
    fx = tree.flatten_names(x)
    for name, leaf in tree.flatten_names(z).items():
        assert torch.allclose(leaf, 81 * fx[name] + 100, rtol=1e-6, atol=1e-4), name
    assert tree.structure(z) == tree.structure(x)


def test_map_keeps_namedtuples_and_lists():
    t = Pair(torch.ones(2), [torch.zeros(3), torch.full((1,), 2.0)])
    out = tree.map(lambda v: v + 1, t)
    assert isinstance(out, Pair) and isinstance(out.b, list)
    assert torch.equal(out.a, torch.full((2,), 2.0)) and torch.equal(out.b[1], torch.full((1,), 3.0))


def test_map_rejects_mismatched_trees():
    x = _params()
    y = {"conv": x["conv"]}
    with pytest.raises(ValueError, match="head"):
        tree.map(lambda a, b: a + b, x, y)


def test_zeros_like_and_ones_like_shapes_dtypes():
    x = _params()
    z = tree.zeros_like(x)
    o = tree.ones_like(x, dtype=torch.float64)
    for name, leaf in tree.flatten_names(x).items():
        zl, ol = tree.flatten_names(z)[name], tree.flatten_names(o)[name]
        assert zl.shape == leaf.shape and zl.dtype == leaf.dtype and not zl.any()
        assert ol.dtype == torch.float64 and bool((ol == 1).all())
        assert zl.data_ptr() != leaf.data_ptr()


def test_global_norm_equals_clip_grad_norm_total():
    x = _params()
    clones = [t.clone().requires_grad_() for t in tree.leaves(x)]
    for c, t in zip(clones, tree.leaves(x)):
        c.grad = t.clone()
    reference = torch.nn.utils.clip_grad_norm_(clones, max_norm=1e9)
    assert torch.allclose(tree.global_norm(x), reference, rtol=1e-6, atol=0)
    # and the plain definition
    flat = torch.cat([t.flatten().double() for t in tree.leaves(x)])
    assert abs(float(tree.global_norm(x)) - float(flat.norm())) < 1e-5
    assert float(tree.global_norm({})) == 0.0


def test_num_params_counts_scalars():
    assert tree.num_params(_params()) == 4 * 9 + 4 + 8 + 2


def test_flatten_unflatten_names_round_trip():
    x = _params()
    flat = tree.flatten_names(x)
    assert list(flat) == ["conv.kernel", "conv.bias", "head.kernel", "head.bias"]
    back = tree.unflatten_names(flat)
    assert tree.structure(back) == tree.structure(x)
    for a, b in zip(tree.leaves(back), tree.leaves(x)):
        assert a is b


def test_flatten_names_of_sequences_uses_indices():
    flat = tree.flatten_names({"layers": [torch.zeros(1), torch.ones(1)]})
    assert list(flat) == ["layers.0", "layers.1"]


def test_flatten_names_rejects_dotted_keys_and_unflatten_rejects_clashes():
    with pytest.raises(ValueError, match=r"contains '\.'"):
        tree.flatten_names({"a.b": torch.zeros(1)})
    with pytest.raises(ValueError, match="both a leaf and a folder"):
        tree.unflatten_names({"a": torch.zeros(1), "a.b": torch.zeros(1)})


def test_assert_same_structure_message_names_the_paths():
    a = {"conv": {"kernel": torch.zeros(1), "bias": torch.zeros(1)}, "head": {"kernel": torch.zeros(1)}}
    b = {"conv": {"kernel": torch.zeros(1)}, "head": {"kernel": torch.zeros(1)}, "extra": {"w": torch.zeros(1)}}
    tree.assert_same_structure(a, tree.zeros_like(a))  # same structure: no error
    with pytest.raises(ValueError) as err:
        tree.assert_same_structure(a, a, b)
    msg = str(err.value)
    assert "pytree 2" in msg
    assert "missing ['conv.bias']" in msg
    assert "unexpected ['extra.w']" in msg


def test_stack_and_unstack_round_trip_keeping_non_tensor_leaves():
    trees = [{"w": _params(), "n": None, "k": 3, "s": torch.tensor(float(i))} for i in range(3)]
    trees[1]["w"] = tree.map(lambda t: t + 1.0, trees[1]["w"])
    stacked = tree.stack(trees)
    assert stacked["w"]["conv"]["kernel"].shape == (3, 4, 1, 3, 3) and stacked["s"].tolist() == [0.0, 1.0, 2.0]
    assert stacked["n"] is None and stacked["k"] == 3
    back = tree.unstack(stacked)
    assert len(back) == 3
    for a, b in zip(back, trees):
        assert tree.structure(a) == tree.structure(b)
        for x, y in zip(tree.leaves(a), tree.leaves(b)):
            assert (x is None and y is None) or (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y)


def test_stack_and_unstack_name_what_differs():
    a = {"w": torch.zeros(2, 3), "k": 1}
    with pytest.raises(ValueError, match=r"pytree 1 differs from pytree 0 at 'w': \(2, 4\)"):
        tree.stack([a, {"w": torch.zeros(2, 4), "k": 1}])
    with pytest.raises(ValueError, match=r"at 'w': \(2, 3\) torch.int64"):
        tree.stack([a, {"w": torch.zeros(2, 3, dtype=torch.int64), "k": 1}])
    with pytest.raises(ValueError, match="at 'k': 2 against 1"):
        tree.stack([a, {"w": torch.zeros(2, 3), "k": 2}])
    with pytest.raises(ValueError, match="does not match pytree 0"):
        tree.stack([a, {"w": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="at least one"):
        tree.stack([])
    with pytest.raises(ValueError, match="one common leading axis"):
        tree.unstack({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="one common leading axis"):
        tree.unstack({"a": torch.zeros(())})
