"""hwr.tasks.strings.step.StringBatches: rendering ahead on a background thread gives the very batches that
rendering in place gives (same key, same strings, bit for bit), and a loop that stops early ends the thread."""

import threading

import torch
from tiny import STRING_SPEC

from hwr import random
from hwr.data import sources
from hwr.data import strings as ds
from hwr.tasks.strings.step import StringBatches


def _pool() -> ds.DigitPool:
    d = sources.load("mnist")
    return ds.digit_pool(d.test_images[:500], d.test_labels[:500])


def _equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_prefetched_batches_are_the_batches_rendered_in_place():
    pool = _pool()
    for spec in (STRING_SPEC, ds.StringSpec()):
        plain = StringBatches(random.key(4), pool, spec, 16, 5)
        ahead = StringBatches(random.key(4), pool, spec, 16, 5, prefetch=True)
        got, want = list(ahead), list(plain)
        assert len(got) == len(want) == 5
        assert all(_equal(g, w) for g, w in zip(got, want, strict=True))
        assert all(_equal(g, plain[i]) for i, g in enumerate(got))
        assert not _equal(got[0], got[1])  # each step draws its own strings


def test_a_loop_that_stops_early_ends_the_render_thread():
    batches = StringBatches(random.key(5), _pool(), STRING_SPEC, 8, 50, prefetch=True)
    it = iter(batches)
    first = next(it)
    it.close()  # what a loop does when it breaks or raises
    assert _equal(first, batches[0])
    assert not [t for t in threading.enumerate() if t.name.startswith("hwr-strings")]
    assert len(list(StringBatches(random.key(5), _pool(), STRING_SPEC, 8, 1, prefetch=True))) == 1
