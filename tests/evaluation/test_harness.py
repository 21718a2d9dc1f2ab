"""The evaluation harness end to end on tiny made-up data sets (seconds, no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation import harness
from evaluation.baselines import Interactions, Popularity, SAR
from flowrec.cli import main as cli
from transforms.catalog import CatalogItem
from transforms.events import batch_from_columns
from transforms.metrics import ALL_METRICS, ranking_metrics
from transforms.splits import stratified_random_split

DAY_MS = 24 * 3600 * 1000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % DAY_MS)  # a UTC midnight, epoch ms


def two_taste_events(users: int = 24, seed: int = 5) -> list[dict]:
    """Users of taste a rate a-items, users of taste b rate b-items, plus a little noise; 3 days of ratings."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(users):
        taste = "a" if u % 2 == 0 else "b"
        items = [f"{taste}{i}" for i in rng.choice(8, size=6, replace=False)] + [f"{'b' if taste == 'a' else 'a'}{rng.integers(8)}"]
        for position, item in enumerate(items):
            ts = T0 + int(rng.integers(3 * DAY_MS))
            records.append({"user_id": f"u{u}", "item_id": item, "event_type": "rating", "rating": float(1 + (u + position) % 5), "ts": ts})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli(["evaluate", *argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_msr_json_shape_and_numbers_match_a_direct_computation(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events())
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "msr", "--algorithms", "popularity,sar", "--k", "3", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["dataset"] == str(path)
    assert report["protocol"] == "msr"
    assert report["k"] == 3
    assert list(report["results"]) == ["popularity", "sar"]
    for result in report["results"].values():
        assert set(ALL_METRICS) <= set(result)
        for metric in ("precision", "recall", "f1", "ndcg", "map", "hr", "mrr", "coverage", "diversity"):
            assert result[metric] is None or 0.0 <= result[metric] <= 1.0
        assert set(result["latency_ms"]) == {"p50", "p95", "p99"}

    # The same split, models and metrics by hand: the harness must add nothing and lose nothing.
    records = two_taste_events()
    users = np.array([r["user_id"] for r in records], dtype=object)
    items = np.array([r["item_id"] for r in records], dtype=object)
    ts = np.array([r["ts"] for r in records], dtype=np.int64)
    ratings = np.array([r["rating"] for r in records])
    split = stratified_random_split(users, items, ratio=0.75, seed=42)
    train = Interactions(users[split.train], items[split.train], ratings[split.train], ts[split.train])
    seen: dict[str, set[str]] = {}
    for u, i in zip(train.user, train.item):
        seen.setdefault(u, set()).add(i)
    relevant: dict[str, set[str]] = {}
    for u, i in zip(users[split.test], items[split.test]):
        if i not in seen.get(u, set()):
            relevant.setdefault(u, set()).add(i)
    for name, model in (("popularity", Popularity()), ("sar", SAR())):
        lists = model.fit(train).recommend(sorted(relevant), 20)
        expected = ranking_metrics(lists, relevant, 3)
        for metric in ("precision", "recall", "f1", "ndcg", "map", "hr", "mrr"):
            assert report["results"][name][metric] == pytest.approx(expected[metric]), (name, metric)
    assert report["users"] == len(relevant)


def test_prequential_by_hand_with_daily_retraining(capsys, tmp_path):
    # Day 0: u1 a, u2 b, u1 b.  Day 1: u3 a, u3 b, u4 c.
    rows = [("u1", "a", 0), ("u2", "b", 1), ("u1", "b", 2), ("u3", "a", DAY_MS + 1), ("u3", "b", DAY_MS + 2), ("u4", "c", DAY_MS + 3)]
    events = batch_from_columns([r[0] for r in rows], [r[1] for r in rows], ["view"] * 6, [T0 + r[2] for r in rows])
    dataset = harness.Dataset(name="tiny", events=events, catalog=[CatalogItem("a", category="x"), CatalogItem("b", category="y"), CatalogItem("c", category="x")])
    report = harness.evaluate(dataset, "prequential", k=10, algorithms=["popularity"])
    result = report.results["popularity"]
    # Day 0 has no model yet: 3 misses.  At day 1 popularity is fitted on day 0: b (2 users), a (1).
    # u3 -> a: list [b, a], hit at rank 2.  u3 -> b: a is seen, list [b], hit at rank 1.  u4 -> c: miss.
    assert result.evaluated == 6
    assert result.metrics["hr"] == pytest.approx(2 / 6)
    assert result.metrics["mrr"] == pytest.approx((1 / 2 + 1) / 6)
    assert result.metrics["precision"] == pytest.approx(2 / 6 / 10)
    assert [(w["evaluated"], w["hr"]) for w in result.windows] == [(3, 0.0), (3, pytest.approx(2 / 3))]
    assert result.windows[1]["start_ms"] - result.windows[0]["start_ms"] == DAY_MS
    # Lists shown: [b, a] twice and [b] -> coverage {a, b} of {a, b, c}; diversity of [b, a] is 1 (y vs x).
    assert result.metrics["coverage"] == pytest.approx(2 / 3)
    assert result.metrics["diversity"] == pytest.approx(1.0)
    assert report.info["evaluated_events"] == 6
    # Re-touching an item is not evaluated.
    again = batch_from_columns(["u1", "u1"], ["a", "a"], ["view", "purchase"], [T0, T0 + 5])
    assert harness.evaluable_events(again).tolist() == [True, False]


def test_fixed_train_and_test_files_from_another_tool(tmp_path, capsys):
    train = tmp_path / "train.csv"
    test = tmp_path / "test.csv"
    seconds = T0 // 1000
    train.write_text("userID,itemID,rating,timestamp\n1,10,5,%d\n1,11,4,%d\n2,10,3,%d\n2,12,4,%d\n3,11,2,%d\n" % tuple(seconds + i for i in range(5)))
    test.write_text("userID,itemID,rating,timestamp\n1,12,5,%d\n3,10,4,%d\n" % (seconds + 10, seconds + 11))
    code, out, _ = run_cli(capsys, "--train", str(train), "--test", str(test), "--algorithms", "popularity", "--k", "1", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["protocol"] == "fixed"
    # Popularity: 10 (2 users), 11 (2), 12 (1).  User 1 saw 10, 11 -> [12]: hit.  User 3 saw 11 -> [10]: hit.
    assert report["results"]["popularity"]["precision"] == pytest.approx(1.0)
    assert report["train_events"] == 5


def test_out_folder_gets_json_markdown_and_plots(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events())
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "temporal", "--algorithms", "popularity,ease", "--out", str(out_dir))
    assert code == 0
    assert "nDCG@10" in out and "ease" in out
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["protocol"] == "temporal" and set(saved["results"]) == {"popularity", "ease"}
    markdown = (out_dir / "results.md").read_text()
    assert "| algorithm |" in markdown and "| ease |" in markdown
    assert (out_dir / "metrics_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prequential_writes_the_hr_over_time_plot(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events(users=10))
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "prequential", "--algorithms", "popularity", "--out", str(out_dir))
    assert code == 0
    assert "HR@10 per window" in out
    assert (out_dir / "hr_over_time.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "ml-100k", "--algorithms", "nope"], "unknown algorithms"),
        (["--dataset", "/no/such/file.csv"], "neither ml-100k"),
        (["--train", "x.csv"], "go together"),
        ([], "give --dataset"),
        (["--dataset", "x", "--k", "0"], "--k must be positive"),
    ],
)
def test_bad_input_exits_2_with_a_reason(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err


def test_file_without_valid_rows_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user_id": "u1"}\nnot json\n')
    code, _, err = run_cli(capsys, "--dataset", str(path))
    assert code == 2 and "no valid event" in err


def test_engine_parts_share_one_replay_but_score_differently(tmp_path):
    pytest.importorskip("transforms.engine")
    events = harness.read_event_file(write_jsonl(tmp_path / "events.jsonl", two_taste_events()))
    catalog = [CatalogItem(f"{t}{i}", title=f"{t} item {i}", category=t, tags=(t,)) for t in "ab" for i in range(8)]
    dataset = harness.Dataset(name="tiny", events=events, catalog=catalog)
    algorithms = ["flowrec", "flowrec-cf", "flowrec-content", "flowrec-trending", "flowrec-usercf"]
    report = harness.evaluate(dataset, "msr", k=3, algorithms=algorithms)
    data = report.to_json()
    assert list(data["results"]) == algorithms
    for result in data["results"].values():
        assert 0.0 <= result["ndcg"] <= 1.0
    # One replay: the engine rows report the same fit time.
    assert len({data["results"][n]["fit_s"] for n in algorithms[:4]}) == 1
    learners = harness.make_learners(algorithms, harness.ModelConfig(), catalog)
    assert [learner.names for learner in learners] == [algorithms[:4], ["flowrec-usercf"]]
    with pytest.raises(ValueError):
        harness.EngineLearner({"x": harness.ModelConfig(half_life_ms=1000)}, harness.ModelConfig(), catalog)


def test_engine_part_configs_zero_the_other_weights():
    base = harness.ModelConfig()
    cf = harness.engine_part_config("flowrec-cf", base)
    assert (cf.weight_cf, cf.weight_content, cf.weight_category, cf.weight_popularity, cf.weight_recent) == (1.0, 0.0, 0.0, 0.0, 0.0)
    trending = harness.engine_part_config("flowrec-trending", base)
    assert (trending.weight_cf, trending.weight_content) == (0.0, 0.0)
    assert (trending.weight_category, trending.weight_popularity) == (base.weight_category, base.weight_popularity)
    assert harness.engine_part_config("flowrec", base) is base


class _BrokenLearner(harness.Learner):
    """A learner whose lists fail, to check that one failure does not lose the other rows."""

    names = ["broken"]

    def fit(self, train):
        pass

    def recommend(self, name, user_ids, n, now_ms, exclude):
        raise KeyError("missing reason")


def test_a_failing_algorithm_keeps_the_table_and_reports_its_error(tmp_path):
    events = harness.read_event_file(write_jsonl(tmp_path / "events.jsonl", two_taste_events()))
    split = harness.split_for_protocol(events, "msr")
    popularity = harness.make_learners(["popularity"], harness.ModelConfig(), [])
    results = harness.evaluate_static(split, [_BrokenLearner(), *popularity], 5, [], set(events.item.tolist()))
    assert results["broken"].error == "KeyError: 'missing reason'"
    assert results["popularity"].error is None and results["popularity"].metrics["hr"] > 0
    report = harness.Report("tiny", "msr", 5, results, {"train_events": 1, "test_events": 1, "users": 1, "runtime_s": 0.0})
    assert report.to_json()["results"]["broken"]["error"] == "KeyError: 'missing reason'"
    assert "broken FAILED: KeyError" in harness.format_table(report)
    preq, _ = harness.evaluate_prequential(events, [_BrokenLearner(), *harness.make_learners(["popularity"], harness.ModelConfig(), [])], 5, [])
    assert preq["broken"].error is not None and preq["popularity"].evaluated > 0


# -- learned embeddings in the harness ---------------------------------------------------------


def _tiny_export(root: Path, items: list[str], version: str = "20260101T000000Z") -> Path:
    """An export where an a-item's query vector points at the a-items' candidate vectors (and b likewise)."""
    from state.embeddings import EmbeddingExport, write_export

    query = np.array([(1, 0, 1) if i.startswith("a") else (0, 1, 1) for i in items], dtype=np.float32)
    candidate = np.array([(1, 0, 0) if i.startswith("a") else (0, 1, 0) for i in items], dtype=np.float32)
    return write_export(root, EmbeddingExport(version=version, item_ids=np.array(items, dtype=object), query=query, candidate=candidate))


def _two_taste_dataset(tmp_path) -> harness.Dataset:
    events = harness.read_event_file(write_jsonl(tmp_path / "events.jsonl", two_taste_events()))
    catalog = [CatalogItem(f"{t}{i}", title=f"{t} item {i}", category=t, tags=(t,)) for t in "ab" for i in range(8)]
    return harness.Dataset(name="tiny", events=events, catalog=catalog)


def test_embedding_rows_are_listed_and_configured():
    for name in ("flowrec-embedding", "flowrec-sequence", "flowrec-no-embeddings"):
        assert name in harness.ALGORITHMS and name in harness.parse_algorithms(name)
    base = harness.ModelConfig(weight_embedding=0.5, weight_sequence=0.2)
    embedding = harness.engine_part_config("flowrec-embedding", base)
    assert (embedding.weight_embedding, embedding.weight_sequence, embedding.weight_cf, embedding.weight_popularity) == (1.0, 0.0, 0.0, 0.0)
    sequence = harness.engine_part_config("flowrec-sequence", base)
    assert (sequence.weight_embedding, sequence.weight_sequence, sequence.weight_content) == (0.0, 1.0, 0.0)
    plain = harness.engine_part_config("flowrec-no-embeddings", base)
    assert (plain.weight_embedding, plain.weight_sequence) == (0.0, 0.0) and plain.weight_cf == base.weight_cf
    assert harness.engine_part_config("flowrec-cf", base).weight_embedding == 0.0
    assert {"weight_embedding", "weight_sequence", "embedding_candidates"} <= set(harness.SCORING_FIELDS)


def test_pretrained_export_drives_the_embedding_rows(tmp_path, capsys):
    dataset = _two_taste_dataset(tmp_path)
    _tiny_export(tmp_path / "exports", [c.item_id for c in dataset.catalog])
    path = tmp_path / "events.jsonl"
    argv = ["--dataset", str(path), "--algorithms", "flowrec,flowrec-embedding,flowrec-no-embeddings,popularity", "--k", "3", "--json"]
    code, out, _ = run_cli(capsys, *argv, "--embeddings", str(tmp_path / "exports"))
    assert code == 0
    results = json.loads(out)["results"]
    # The export separates the two tastes exactly, so the embedding alone beats popularity;
    # flowrec with default weights (embedding 0) equals the hybrid without embeddings.
    assert results["flowrec-embedding"]["ndcg"] > results["popularity"]["ndcg"]
    assert results["flowrec"]["ndcg"] == results["flowrec-no-embeddings"]["ndcg"]
    # The same export by its version directory, and a missing export fails only the embedding rows.
    code, again, _ = run_cli(capsys, *argv, "--embeddings", str(tmp_path / "exports" / "20260101T000000Z"))
    assert json.loads(again)["results"]["flowrec-embedding"]["ndcg"] == results["flowrec-embedding"]["ndcg"]
    code, out, _ = run_cli(capsys, *argv, "--embeddings", str(tmp_path / "nothing"))
    assert code == 1
    failed = json.loads(out)["results"]
    assert "no embedding export found" in failed["flowrec-embedding"]["error"]
    assert "error" not in failed["flowrec"] and "error" not in failed["popularity"]


def test_hybrid_uses_the_export_when_weighted(tmp_path):
    dataset = _two_taste_dataset(tmp_path)
    exports = tmp_path / "exports"
    _tiny_export(exports, [c.item_id for c in dataset.catalog])
    config = harness.ModelConfig(weight_embedding=2.0)
    report = harness.evaluate(dataset, "msr", k=3, algorithms=["flowrec", "flowrec-no-embeddings"], config=config, embeddings=harness.PretrainedEmbeddings(exports))
    assert report.results["flowrec"].metrics != report.results["flowrec-no-embeddings"].metrics


def test_without_torch_the_embedding_rows_fail_clearly_and_the_rest_run(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    dataset = _two_taste_dataset(tmp_path)
    algorithms = ["flowrec", "flowrec-embedding", "flowrec-sequence", "popularity"]
    for protocol in ("msr", "prequential"):
        report = harness.evaluate(dataset, protocol, k=3, algorithms=algorithms)
        for name in ("flowrec-embedding", "flowrec-sequence"):
            assert "needs PyTorch" in report.results[name].error and "--embeddings DIR" in report.results[name].error
        assert report.results["flowrec"].error is None and report.results["popularity"].error is None
        assert report.results["flowrec"].evaluated > 0


def test_prequential_switches_a_fixed_export_in_once(tmp_path):
    dataset = _two_taste_dataset(tmp_path)
    exports = tmp_path / "exports"
    _tiny_export(exports, [c.item_id for c in dataset.catalog])
    report = harness.evaluate(dataset, "prequential", k=3, algorithms=["flowrec-embedding", "flowrec-cf"], embeddings=harness.PretrainedEmbeddings(exports))
    assert report.info["retrain"] == {"flowrec-embedding": "every event; embeddings fixed export", "flowrec-cf": "every event"}
    assert report.results["flowrec-embedding"].metrics["hr"] > 0


def test_embeddings_trained_in_the_harness_on_the_training_part_only(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from learn.config import TrainConfig

    dataset = _two_taste_dataset(tmp_path)
    keep = tmp_path / "kept"
    source = harness.TrainedEmbeddings(dataset.catalog, train_config=TrainConfig(epochs=3, sequence_epochs=1, patience=1), keep_dir=keep)
    report = harness.evaluate(dataset, "msr", k=3, algorithms=["flowrec-embedding", "flowrec-sequence", "flowrec"], embeddings=source)
    assert all(r.error is None for r in report.results.values())
    # One export, named by the last TRAINING event's time: the test part was not seen.
    split = harness.split_for_protocol(dataset.events, "msr")
    (version,) = [p for p in keep.iterdir() if not p.name.startswith(".")]
    from learn.train import version_name

    assert version.name == version_name(int(split.train.ts.max()))
    ((count, first, last, *_),) = source._trained  # the fingerprint of the one training part it saw
    assert (count, first, last) == (len(split.train), int(split.train.ts.min()), int(split.train.ts.max()))
    assert count < len(dataset.events)
    # Prequential: retrained at the start of each UTC day on the earlier events (3 days -> 2 trainings).
    daily = harness.TrainedEmbeddings(dataset.catalog, train_config=TrainConfig(epochs=2, sequence=False, patience=1), keep_dir=tmp_path / "daily")
    report = harness.evaluate(dataset, "prequential", k=3, algorithms=["flowrec-embedding"], embeddings=daily)
    assert report.info["retrain"]["flowrec-embedding"] == "every event; embeddings daily"
    days = sorted({int(t) // DAY_MS for t in dataset.events.ts.tolist()})
    assert len([p for p in (tmp_path / "daily").iterdir() if not p.name.startswith(".")]) == len(days) - 1


def test_learn_and_the_cli_import_the_evaluation_library_without_the_benchmarks():
    """learn/ and the evaluate/tune commands use the protocols without loading any ``bench`` module."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    code = (
        "import sys, learn.train, flowrec.commands.evaluate, flowrec.commands.tune, evaluation.tune; "
        "print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_results_json_records_the_config_used_with_the_half_life_derived_from_the_training_part(tmp_path, capsys):
    """Ratings spread over 3 days, never repeated: the half-life is the training part's span, and results.json says so."""
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events())
    given = tmp_path / "model.json"
    given.write_text(json.dumps({"neighbours": 7}))
    out_dir = tmp_path / "out"
    code, _, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "msr", "--algorithms", "flowrec,flowrec-cf,sar", "--model-config", str(given), "--out", str(out_dir))
    assert code == 0
    saved = json.loads((out_dir / "results.json").read_text())
    dataset = harness.load_dataset(str(path), tmp_path)
    train = harness.split_for_protocol(dataset.events, "msr", 42).train
    span = int(train.ts.max() - train.ts.min())
    assert saved["model_config"]["half_life_ms"] == span != harness.ModelConfig().half_life_ms
    assert saved["model_config"]["neighbours"] == 7 and saved["model_config"]["derive_from_history"] == []
    assert saved["derived"]["half_life_ms"]["value_ms"] == span
    # The written config reproduces the run: read back, nothing is left to derive.
    assert harness.ModelConfig.from_dict(saved["model_config"]).derive_from_history == ()

    # An explicit half-life is used as given.
    given.write_text(json.dumps({"half_life_ms": 3_600_000}))
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "msr", "--algorithms", "flowrec", "--model-config", str(given), "--json")
    assert code == 0 and json.loads(out)["model_config"]["half_life_ms"] == 3_600_000 and json.loads(out)["derived"] == {}


def test_engine_rows_share_the_derived_settings(tmp_path):
    dataset = _two_taste_dataset(tmp_path)
    split = harness.split_for_protocol(dataset.events, "msr", 42)
    (learner,) = harness.make_learners(["flowrec", "flowrec-cf", "flowrec-content"], harness.ModelConfig(), dataset.catalog)
    learner.fit(split.train)
    assert learner.engine.config is learner.config and learner.configs["flowrec"] is learner.config
    half_life = learner.config.half_life_ms
    assert half_life == int(split.train.ts.max() - split.train.ts.min())
    assert {c.half_life_ms for c in learner.configs.values()} == {half_life}
    assert learner.configs["flowrec-cf"].weight_content == 0.0


@pytest.mark.datasets
def test_default_config_beats_sar_and_popularity_on_movielens_msr(capsys):
    """Issue 14's bar: with no per-data-set config, flowrec and its co-occurrence part alone reach SAR on ML-100K msr."""
    from flowrec.config import load_settings
    from transforms.datasets import DatasetMissing

    try:
        dataset = harness.load_dataset("ml-100k", load_settings().datasets_dir)
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    report = harness.evaluate(dataset, "msr", algorithms=["flowrec", "flowrec-cf", "sar", "popularity"])
    ndcg = {name: result.metrics["ndcg"] for name, result in report.results.items()}
    assert ndcg["flowrec"] >= ndcg["sar"] > ndcg["popularity"]
    assert ndcg["flowrec-cf"] >= ndcg["sar"]


@pytest.mark.parametrize("protocol", ["msr", "prequential"])
def test_metrics_vs_k_plot_has_integer_ticks_intervals_and_a_coverage_diversity_panel(tmp_path, protocol):
    import matplotlib.pyplot as plt

    dataset = _two_taste_dataset(tmp_path)
    report = harness.evaluate(dataset, protocol, k=3, algorithms=["flowrec-cf", "popularity", "sar"])
    saved = report.to_json()
    for name, result in saved["results"].items():
        for cut, values in result["at_k"].items():
            for metric in harness.PLOT_METRICS:
                low, high = result["intervals"][cut][metric]
                # Where every resample gives one value the bounds and the mean differ by float rounding only.
                assert low - 1e-12 <= values[metric] <= high + 1e-12, (name, cut, metric)
    fig = harness.metrics_figure(report)
    try:
        panels = fig.axes
        for ax in panels[: len(harness.PLOT_METRICS)]:
            assert [float(t) for t in ax.get_xticks()] == [1.0, 3.0, 5.0, 10.0, 20.0]
            assert len(ax.collections) == 3  # one interval band per algorithm
        bars = panels[len(harness.PLOT_METRICS)]
        assert [t.get_text() for t in bars.get_xticklabels()] == list(saved["results"])
        heights = [round(p.get_height(), 6) for p in bars.patches]
        expected = [round(r["coverage"], 6) for r in saved["results"].values()] + [round(r["diversity"] or 0.0, 6) for r in saved["results"].values()]
        assert heights == expected
    finally:
        plt.close(fig)


def test_prequential_reports_the_learned_blend_weights_per_window(tmp_path, capsys):
    """With blend_learning the replay scores lists at window close as the job does, learns,
    and reports the weights per window; without it, nothing is reported."""
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events(users=16))
    config = tmp_path / "model.json"
    config.write_text(json.dumps({"blend_learning": True, "blend_margin": 0.0}))
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "prequential", "--algorithms", "flowrec", "--model-config", str(config), "--json")
    assert code == 0
    report = json.loads(out)
    windows = report["blend_weights"]
    assert [w["end_ms"] - w["start_ms"] for w in windows] == [DAY_MS] * len(windows)
    for entry in windows:
        assert sum(entry["settings"].values()) >= 1
        assert set(entry["weights"]) >= {"weight_cf", "weight_content", "weight_category", "weight_popularity"}
    config.write_text(json.dumps({"blend_learning": False}))
    code, out, _ = run_cli(capsys, "--dataset", str(path), "--protocol", "prequential", "--algorithms", "flowrec", "--model-config", str(config), "--json")
    assert "blend_weights" not in json.loads(out)


def test_blend_rows_render_mean_weights_and_settings():
    info = {"blend_weights": [{"start_ms": T0, "end_ms": T0 + DAY_MS, "weights": {"weight_cf": 1.0, "weight_content": 2.5, "weight_recent": 0.0}, "settings": {"configured": 3, "lean_content": 5}}]}
    report = harness.Report(dataset="d", protocol="prequential", k=10, results={}, info=info)
    header, rows = harness.blend_rows(report)
    assert header == ["window (UTC)", "weight_cf", "weight_content", "shards per setting"]
    assert rows == [["2023-11-14 00:00", "1.000", "2.500", "configured:3 lean_content:5"]]
