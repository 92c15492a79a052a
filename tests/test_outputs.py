"""The "outputs in <folder>: ..." lines of search.py and train.py name exactly what the run folder
holds, for each option that changes what is written (the logger, exports, a data shape known or
not). Bug this catches: a line that promises model.onnx after train.export=false (issue 28), or
a new output that the line leaves out."""

import io
import re

import pytest
from rich.console import Console

from blockqnn.listing import outputs
from tests.conftest import FakeEvaluator, compose_search, compose_train


def _listed(text: str, folder) -> list[str]:
    line = re.search(rf"outputs in {re.escape(str(folder))}: (.*)", " ".join(text.split()))
    assert line, text[-2000:]
    return [name.strip() for name in line.group(1).split(",")]


def _on_disk(folder) -> set[str]:
    return {
        p.name + "/" if p.is_dir() else p.name
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and p.suffix != ".log"
        and p.name != "search.lock"
        and not p.name.endswith(("-wal", "-shm", "-journal"))
    }


SEARCH_CASES = {
    "logger=none": (["logger=none"], {"episodes.csv", "wandb/"}),
    "logger=csv": (["logger=csv"], {"wandb/"}),
    "logger=wandb": (["logger=wandb", "logger.mode=offline"], {"episodes.csv"}),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_search_lists_what_it_wrote(case, tmp_path, monkeypatch):
    from blockqnn.search.loop import Search

    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides, absent = SEARCH_CASES[case]
    buf = io.StringIO()
    Search(
        compose_search("debug=smoke", *overrides),
        tmp_path,
        evaluator=FakeEvaluator(),
        console=Console(file=buf, width=100),
    ).run()
    listed = _listed(buf.getvalue(), tmp_path)
    assert set(listed) == _on_disk(tmp_path)
    assert listed[:2] == ["search.db", "best_block.json"]  # the main outputs first
    expected = {"best_block.png", "best_block.svg", "best_network.png", "best_network.svg"}
    assert expected <= set(listed) and not absent & set(listed)


def test_search_without_a_known_data_shape_lists_no_network_drawing(tmp_path):
    """An image folder without train/ has no known shape: no best_network.* and none listed."""
    from blockqnn.search.loop import Search

    # the fake evaluator never reads the data; only the drawing asks for its shape
    cfg = compose_search("debug=smoke", "logger=none", "data=image_folder", "data.root=/nowhere")
    buf = io.StringIO()
    Search(cfg, tmp_path, evaluator=FakeEvaluator(), console=Console(file=buf, width=100)).run()
    listed = _listed(buf.getvalue(), tmp_path)
    assert set(listed) == _on_disk(tmp_path)
    assert "best_block.png" in listed and not any(n.startswith("best_network") for n in listed)


TRAIN_CASES = {
    "export, csv": (
        ["train.export=true", "logger=csv"],
        {"model.onnx", "model.torchscript.pt", "block.json"},
    ),
    "no export, csv": (["train.export=false", "logger=csv"], set()),
    "no export, no logger": (["train.export=false", "logger=none"], set()),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_lists_what_it_wrote(case, tmp_path, monkeypatch, capsys):
    from blockqnn import cli

    overrides, exports = TRAIN_CASES[case]
    monkeypatch.setattr(cli, "run_dir", lambda: tmp_path)
    cli.run_train(compose_train("debug=smoke_train", "block=plain", *overrides))
    listed = _listed(capsys.readouterr().err, tmp_path)
    assert set(listed) == _on_disk(tmp_path)
    for name in ("metrics.json", "checkpoints/", "block.png", "network.png"):
        assert name in listed
    assert {"model.onnx", "model.torchscript.pt", "block.json"} & set(listed) == exports
    assert listed == outputs(tmp_path, cli.TRAIN_OUTPUTS)
