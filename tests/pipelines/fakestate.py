"""Managed-state stand-ins for unit tests of operators without a cluster (a MapState on a dict, a ValueState)."""

from __future__ import annotations


class FakeMap(dict):
    """A MapState on a dict."""

    def put(self, key, value):
        self[key] = value

    def get(self, key):
        return dict.get(self, key)

    def contains(self, key):
        return key in self

    def remove(self, key):
        self.pop(key, None)

    def is_empty(self):
        return not self


class CountingMap(FakeMap):
    """A MapState on a dict that counts its puts and its writes (puts and removes)."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0
        self.writes = 0

    def put(self, key, value):
        self.puts += 1
        self.writes += 1
        super().put(key, value)

    def remove(self, key):
        self.writes += 1
        super().remove(key)


class RecordingMap(FakeMap):
    """A MapState on a dict that records its calls, as ``(method, key)``, in ``calls``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, object]] = []

    def get(self, key):
        self.calls.append(("get", key))
        return super().get(key)

    def contains(self, key):
        self.calls.append(("contains", key))
        return super().contains(key)

    def put(self, key, value):
        self.calls.append(("put", key))
        super().put(key, value)

    def remove(self, key):
        self.calls.append(("remove", key))
        super().remove(key)


class FakeValue:
    """A ValueState."""

    def __init__(self):
        self.raw = None

    def value(self):
        return self.raw

    def update(self, raw):
        self.raw = raw
