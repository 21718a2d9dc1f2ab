"""The scorer's view of the broadcast model: each key resolves to its latest version at or before the
scored window, whatever order the versions came in, and pruning keeps what open windows still read."""

from __future__ import annotations

import numpy as np

from pipelines.messages import ModelUpdate
from pipelines.operators import Scorer, _VersionedView
from state.schemas import encode_scored
from state.writes import Ttls
from tests.pipelines.fakestate import FakeMap
from transforms.config import ModelConfig


class _BroadcastContext:
    def __init__(self) -> None:
        self.state = FakeMap()

    def get_broadcast_state(self, descriptor):
        return self.state


def _scorer() -> Scorer:
    scorer = Scorer(ModelConfig(), Ttls(60, 60), record_freshness=False)
    scorer.mirror = None
    scorer.closed_window = -1
    scorer.online = None
    return scorer


def _list(*ids: str):
    return encode_scored(list(ids), [1.0] * len(ids))


def _ids(found) -> list[str] | None:
    return None if found is None else list(found[0])


def test_a_key_resolves_to_its_version_at_the_window():
    scorer, ctx = _scorer(), _BroadcastContext()
    scorer.process_broadcast_element(ModelUpdate(3, [("n:a", _list("x"))]), ctx)
    scorer.process_broadcast_element(ModelUpdate(5, [("n:a", _list("y"))]), ctx)

    def at(window: int):
        return _ids(_VersionedView(scorer.mirror, "n:", window).get("a"))

    assert [at(w) for w in (2, 3, 4, 5, 9)] == [None, ["x"], ["x"], ["y"], ["y"]]
    # A version of window 7: windows 7 on see it, earlier windows what they saw.
    scorer.process_broadcast_element(ModelUpdate(7, [("n:a", _list("z"))]), ctx)
    assert [at(w) for w in (9, 6, 4, 7)] == [["z"], ["y"], ["x"], ["z"]]
    # Another key, and a key nobody wrote, under another prefix.
    assert _VersionedView(scorer.mirror, "c:", 9).get("a", "none") == "none"
    scorer.process_broadcast_element(ModelUpdate(8, [("c:a", _list("w"))]), ctx)
    assert _ids(_VersionedView(scorer.mirror, "c:", 9).get("a")) == ["w"]
    assert _ids(_VersionedView(scorer.mirror, "n:", 9).get("a")) == ["z"]


def test_pruning_keeps_the_versions_open_windows_read():
    scorer, ctx = _scorer(), _BroadcastContext()
    scorer.process_broadcast_element(ModelUpdate(1, [("n:a", _list("x"))]), ctx)
    assert _ids(_VersionedView(scorer.mirror, "n:", 1).get("a")) == ["x"]
    # Window 4 scored: versions before the newest one visible to it are dead once a newer one comes.
    scorer.closed_window = 4
    scorer.process_broadcast_element(ModelUpdate(4, [("n:a", _list("y"))]), ctx)
    assert [v[0] for v in scorer.mirror["n:a"]] == [4]
    assert _ids(_VersionedView(scorer.mirror, "n:", 5).get("a")) == ["y"]
    assert np.array_equal(_VersionedView(scorer.mirror, "n:", 5).get("a")[1], [1.0])
