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


class FakeValue:
    """A ValueState."""

    def __init__(self):
        self.raw = None

    def value(self):
        return self.raw

    def update(self, raw):
        self.raw = raw
