"""`flowrec train` end to end on a generated shop, and its message when PyTorch is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson

from flowrec import cli
from state.embeddings import latest_version, read_export
from transforms.embedding import EmbeddingModel

FLOWREC = Path(sys.executable).parent / "flowrec"


def test_cli_trains_a_generated_shop_into_a_readable_export(tmp_path):
    shop = tmp_path / "shop"
    made = subprocess.run([str(FLOWREC), "generate", "--users", "150", "--items", "80", "--events", "5000", "--days", "5", "--out", str(shop)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [
            str(FLOWREC), "train", "--input", str(shop / "events.jsonl"), "--catalog", str(shop / "catalog.jsonl"), "--out", str(tmp_path / "exports"),
            "--epochs", "4", "--sequence-epochs", "2", "--dim", "8", "--neighbours", "5", "--seed", "3", "--json", "--no-progress",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    path = latest_version(tmp_path / "exports")
    assert summary["path"] == str(path) and summary["items"] == 80 and summary["events"] == 5000
    assert summary["train_seconds"] > 0 and set(summary["validation"]) == {"embedding", "sequence"}
    assert 0 < summary["ann_recall@5"] <= 1 and summary["epochs"]["embedding"]["run"] <= 4
    export = read_export(path)
    assert export.dim == 9 and len(export.item_ids) == 80 and export.meta["model"]["train"]["seed"] == 3
    model = EmbeddingModel(export)
    first = export.item_ids[:3].tolist()
    assert model.top(model.user_vector([(item, 1.0) for item in first]), 5, exclude=set(first))[0].size == 5
    assert model.sequence_vector(first) is not None


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert cli.main(["train", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "neither ml-100k, taobao nor an existing file" in capsys.readouterr().err
    events = tmp_path / "e.csv"
    events.write_text("user,item,rating,timestamp\nu1,i1,5,1700000000\n")
    assert cli.main(["train", "--input", str(events), "--out", str(tmp_path), "--loss", "hinge"]) == 2
    assert "loss must be one of" in capsys.readouterr().err


def test_missing_torch_names_the_extra(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert cli.main(["train", "--dataset", "ml-100k", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs torch" in err
    # The exact command for this interpreter and checkout, not a `pip` that may belong to another Python.
    repo = Path(__file__).resolve().parents[2]
    assert err.rstrip().endswith(f"install it with: {sys.executable} -m pip install -e '{repo}[learn]'"), err
    assert not any(tmp_path.iterdir())


def test_missing_torch_in_a_real_process_prints_one_line_with_the_install_command(tmp_path):
    # sys.modules[name] = None is how Python marks a module as not importable: find_spec then returns None.
    hide_torch = "import sys; sys.modules['torch'] = None; from flowrec.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide_torch, "train", "--dataset", "ml-100k", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"-m pip install -e '{Path(__file__).resolve().parents[2]}[learn]'"), done.stderr
