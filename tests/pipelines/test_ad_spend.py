"""The ad-spend operator on fake Flink state: whichever input comes first, a window's clicks are priced
with the sponsorships in effect for that window; totals are absolute; late and too-late counts.

Window 200 ms (the default).  Day D = 20 * 86,400,000.  Items: a (bid 0.5, campaign c1), b (bid 2, c1).
"""

from __future__ import annotations

from pipelines.messages import AttributionCounts, SinkBatch, SponsorshipUpdate
from pipelines.operators import AdSpend, PendingByWindow
from state.keys import KeyKind
from transforms.ads import NO_CAMPAIGN
from transforms.config import ModelConfig
from tests.pipelines.fakestate import FakeMap, FakeValue

DAY = 86_400_000
D = 20 * DAY
W0 = D // 200  # the first window of day D


class FakeTimers:
    def __init__(self):
        self.watermark = -(2**63)
        self.timers: set[int] = set()

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, t):
        self.timers.add(t)

    def delete_event_time_timer(self, t):
        self.timers.discard(t)


class FakeCtx:
    def __init__(self):
        self.timers = FakeTimers()

    def timer_service(self):
        return self.timers


def operator() -> tuple[AdSpend, FakeCtx]:
    spend = AdSpend(ModelConfig())
    spend.pending = PendingByWindow(FakeMap())
    spend.days = FakeMap()
    spend.current = FakeValue()
    return spend, FakeCtx()


def send(spend: AdSpend, ctx: FakeCtx, value) -> None:
    assert list(spend.process_element(value, ctx)) == []


def fire(spend: AdSpend, ctx: FakeCtx, up_to_window: int) -> dict[str, dict[str, str]]:
    """Advance the watermark past ``up_to_window`` and fire the due timers: {day: written fields}."""
    ctx.timers.watermark = (up_to_window + 1) * 200 - 1
    written: dict[str, dict[str, str]] = {}
    for t in sorted(t for t in ctx.timers.timers if t <= ctx.timers.watermark):
        if t not in ctx.timers.timers:
            continue  # closed by an earlier timer of this pass
        ctx.timers.timers.discard(t)
        for batch in spend.on_timer(t, ctx):
            assert isinstance(batch, SinkBatch)
            for w in batch.writes:
                assert w.kind is KeyKind.METRICS_ADS and w.ttl_s == 3 * 24 * 3600
                written.setdefault(w.part, {}).update(w.fields)
    return written


def clicks(window: int, **by_item: int) -> AttributionCounts:
    return AttributionCounts({}, {(D, item, "clicks"): n for item, n in by_item.items()}, window)


START = SponsorshipUpdate(W0, {"a": (0.5, "c1"), "b": (2.0, "c1")})


def test_a_windows_clicks_wait_for_its_sponsorships_whichever_comes_first():
    spend, ctx = operator()
    send(spend, ctx, clicks(W0 + 1, a=2))  # counts first ...
    send(spend, ctx, START)  # ... then the catalog of an earlier window
    assert fire(spend, ctx, W0 + 1) == {str(D): {"c1|campaign_clicks": "2", "c1|spend": "1"}}


def test_a_bid_change_prices_the_clicks_of_its_own_window_on():
    spend, ctx = operator()
    send(spend, ctx, START)
    send(spend, ctx, clicks(W0 + 4, a=1))
    send(spend, ctx, clicks(W0 + 5, a=1, b=1))
    send(spend, ctx, SponsorshipUpdate(W0 + 5, {"a": (1.5, "c1")}))  # a's bid raised, b no longer sponsored
    assert fire(spend, ctx, W0 + 5) == {str(D): {"c1|campaign_clicks": "2", "c1|spend": "2"}}  # 0.5 + 1.5; b's click is free
    # Totals are absolute: a later window rewrites them whole.
    send(spend, ctx, AttributionCounts({}, {(D, "a", "impressions"): 3, (D, "a", "clicks"): 1}, W0 + 9))
    assert fire(spend, ctx, W0 + 9) == {str(D): {"c1|campaign_impressions": "3", "c1|campaign_clicks": "3", "c1|spend": "3.5"}}


def test_late_counts_go_to_the_open_window_and_days_past_the_horizon_stay_final():
    spend, ctx = operator()
    send(spend, ctx, SponsorshipUpdate(W0, {"n": (0.25, NO_CAMPAIGN)}))
    assert fire(spend, ctx, W0 + 10) == {}
    send(spend, ctx, clicks(W0 + 3, n=4))  # its window closed here already: counted in the open one
    assert fire(spend, ctx, W0 + 11) == {str(D): {"~|campaign_clicks": "4", "~|spend": "1"}}
    horizon = (D + DAY + spend.horizon_ms) // 200
    send(spend, ctx, AttributionCounts({}, {(D + DAY, "n", "clicks"): 1}, horizon))
    send(spend, ctx, clicks(horizon, n=1))  # day D is over by more than the horizon: not counted
    assert fire(spend, ctx, horizon) == {str(D + DAY): {"~|campaign_clicks": "1", "~|spend": "0.25"}}
    assert str(D) not in spend.days  # its totals left state
