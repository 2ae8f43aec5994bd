import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion

from hwr import metrics


@pytest.fixture
def labels_preds():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 6, (500,), generator=g)
    p = torch.where(torch.rand(500, generator=g) < 0.7, y, torch.randint(0, 6, (500,), generator=g))
    p[p == 5] = 4  # class 5 never predicted: zero-division path
    return y, p


def test_confusion_matches_sklearn(labels_preds):
    y, p = labels_preds
    c = metrics.confusion_matrix(y, p, 6)
    assert c.tolist() == sk_confusion(y.numpy(), p.numpy(), labels=range(6)).tolist()


def test_summary_matches_sklearn(labels_preds):
    y, p = labels_preds
    s = metrics.summarize(metrics.confusion_matrix(y, p, 6))
    pr, rc, f1, sup = precision_recall_fscore_support(y.numpy(), p.numpy(), labels=range(6), zero_division=0)
    assert s["per_class"]["precision"] == pytest.approx(pr.tolist())
    assert s["per_class"]["recall"] == pytest.approx(rc.tolist())
    assert s["per_class"]["f1"] == pytest.approx(f1.tolist())
    assert s["per_class"]["support"] == sup.tolist()
    assert s["macro_f1"] == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro", zero_division=0))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y.numpy(), p.numpy()))
    assert s["accuracy"] == pytest.approx((y == p).float().mean().item())
    assert s["count"] == 500


def test_accumulate_over_batches_equals_whole(labels_preds):
    y, p = labels_preds
    totals = None
    for i in range(0, 500, 128):
        totals = metrics.accumulate(totals, {"confusion": metrics.confusion_matrix(y[i : i + 128], p[i : i + 128], 6)})
    assert torch.equal(totals["confusion"], metrics.confusion_matrix(y, p, 6))


def test_loss_is_mean_per_sample():
    s = metrics.summarize(torch.eye(3, dtype=torch.long) * 2, loss_sum=3.0)
    assert s["loss"] == pytest.approx(0.5)


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metrics.confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 2)


def test_macro_f1_ignores_classes_neither_true_nor_predicted():
    y, p = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 2])
    s = metrics.summarize(metrics.confusion_matrix(y, p, 5))  # classes 3, 4 never occur
    assert s["macro_f1"] == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro"))
