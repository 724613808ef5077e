"""Token classification end to end, offline and tiny: MiniLM fine-tuned for 3 epochs on 60 generated CoNLL
sentences ("<name> lives in <city> ."). fit (detected from the layout) -> bundle -> evaluate --json with the
contract keys -> predict (CoNLL, raw text lines; JSONL and CSV) with entities at character offsets; the
Predictor, serve and the ONNX export (+ int8) answering the same JSON, with parity per word; the report's per-type
table; the refusals (strategies, options, mismatched --task) with their reasons."""
from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import transferkit
from tests.conftest import VENV_BIN
from transferkit.compare import compare
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.conll import split_words
from transferkit.data.examples import Examples
from transferkit.serve.app import create_app
from transferkit.serve.predictor import Predictor

NAMES = ("Anna", "Bruno", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana")
CITIES = ("Rome", "Paris", "Oslo", "Lima", "Quito", "Kyiv", "Hanoi", "Dakar")
VERBS = ("lives in", "works in", "flew to", "loves")


def sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        verb = rng.choice(VERBS).split()
        out.append([(rng.choice(NAMES), "B-PER"), *[(w, "O") for w in verb], (rng.choice(CITIES), "B-LOC"),
                    (".", "O")])
    return out


def write_conll(path: Path, data: list[list[tuple[str, str]]]) -> Path:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in data) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ner")
    return {"train": write_conll(root / "train.conll", sentences(60, 0)),
            "test": write_conll(root / "test.conll", sentences(12, 1)), "root": root}


@pytest.fixture(scope="module")
def run(files) -> transferkit.api.FitResult:
    return transferkit.fit(str(files["train"]), model="minilm", strategy="finetune", epochs=3, lr=3e-3,
                           out=str(files["root"] / "run"), progress=False)


def test_fit_detects_tokens_and_learns_the_entities(run, files):
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    assert summary["task"] == "tokens"
    metrics = transferkit.evaluate(run.bundle_dir, str(files["test"]), progress=False)
    for key in ("entity_f1", "entity_precision", "entity_recall", "token_accuracy", "per_type", "n"):
        assert key in metrics
    assert metrics["n"] == 12 and set(metrics["per_type"]) == {"LOC", "PER"}
    assert metrics["entity_f1"] > 0.5  # two unambiguous entity slots; an untrained head scores about 0
    report = (run.run_dir / "report.md").read_text()
    assert "| PER |" in report and "| LOC |" in report and "micro avg" in report


def test_evaluate_json_on_the_cli_prints_the_contract_keys(run, files, cli_env):
    done = subprocess.run([str(VENV_BIN / "transferkit"), "evaluate", "--bundle", str(run.bundle_dir), "--data",
                           str(files["test"]), "--json"], capture_output=True, text=True, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert {"entity_f1", "entity_precision", "entity_recall", "token_accuracy", "per_type", "n"} <= set(metrics)


def test_predict_writes_words_tags_and_entities_with_offsets(run, files):
    out = files["root"] / "pred.jsonl"
    transferkit.predict(run.bundle_dir, str(files["test"]), out=out, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    for row in rows:
        assert len(row["words"]) == len(row["tags"]) in (4, 5)
        for entity in row["entities"]:
            assert row["text"][entity["start"]:entity["end"]] == entity["text"]
            assert set(entity) == {"text", "type", "start", "end", "score"}
    raw = files["root"] / "raw.txt"
    raw.write_text("  Dana   flew to Oslo.\n\nHana loves Lima!\n   \n", encoding="utf-8")  # a row per line
    csv_out = files["root"] / "pred.csv"
    transferkit.predict(run.bundle_dir, str(raw), out=csv_out, progress=False)
    with open(csv_out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["text"] for r in rows] == ["  Dana   flew to Oslo.", "", "Hana loves Lima!", "   "]
    assert [json.loads(rows[i][k]) for i in (1, 3) for k in ("words", "entities")] == [[]] * 4
    entities = json.loads(rows[0]["entities"])
    assert all(rows[0]["text"][e["start"]:e["end"]] == e["text"] for e in entities)
    assert json.loads(rows[0]["words"]) == ["Dana", "flew", "to", "Oslo", "."]


TEXTS = ["  Dana   flew to Oslo.", "Hana loves Lima!"]
WORDS = [["Chen", "works", "in", "Kyiv", "."]]
LONG = " ".join(f"{n} lives in {c} ." for n, c in zip(NAMES * 10, CITIES[::-1] * 10))  # 400 words


def test_top_k_is_refused_for_token_bundles(run, files):
    with pytest.raises(ConfigError, match="--top-k"):
        transferkit.predict(run.bundle_dir, str(files["test"]), top_k=2, progress=False)


def test_predictor_answers_the_json_predict_writes_for_texts_and_word_lists(run, files):
    raw = files["root"] / "predictor.txt"
    raw.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    conll = write_conll(files["root"] / "words.conll", [[(w, "O") for w in WORDS[0]]])
    written = []
    for i, data in enumerate((raw, conll)):
        out = files["root"] / f"written{i}.jsonl"
        transferkit.predict(run.bundle_dir, str(data), out=out, progress=False)
        written += [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    predictor = Predictor.from_bundle(run.bundle_dir)
    answered = predictor.tag([*TEXTS, *WORDS])
    assert answered == written == predictor.predict(Examples("text", [*TEXTS, *WORDS], None, "api")).rows
    assert answered[0]["words"] == ["Dana", "flew", "to", "Oslo", "."] and answered[2]["words"] == WORDS[0]
    assert [(e["text"], e["type"]) for e in answered[0]["entities"]] == [("Dana", "PER"), ("Oslo", "LOC")]
    assert (answered[0]["entities"][0]["start"], answered[0]["entities"][0]["end"]) == (2, 6)
    with pytest.raises(ConfigError, match="a row per sentence"):  # predict_to_file's score rows do not fit
        next(predictor.iter_batches(Examples("text", TEXTS, None, "api")))


def test_a_text_longer_than_the_window_has_every_word_tagged_once(run):
    predictor = Predictor.from_bundle(run.bundle_dir)
    assert len(LONG.split()) > predictor.preprocessing.max_length  # at least two windows
    row = predictor.predict(Examples("text", [LONG], None, "long")).rows[0]
    assert row["words"] == split_words(LONG) and len(row["tags"]) == len(row["words"])
    people = [e for e in row["entities"] if e["type"] == "PER"]
    assert all(LONG[e["start"]:e["end"]] == e["text"] for e in row["entities"])
    assert len(people) >= 0.9 * 80  # 80 names; words near every window edge are tagged too


def test_serve_answers_the_predictors_json(run):
    predictor = Predictor.from_bundle(run.bundle_dir)
    expected = predictor.predict(Examples("text", [*TEXTS, *WORDS, ""], None, "api")).rows
    with TestClient(create_app(predictor)) as client:
        answer = client.post("/v1/predict", json={"inputs": [*TEXTS, *WORDS, ""]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == expected
        assert expected[-1] == {"text": "", "words": [], "tags": [], "entities": []}
        refused = client.post("/v1/predict", json={"inputs": TEXTS, "top_k": 2})
        assert refused.status_code == 422 and "tag per word" in refused.json()["detail"]
        wrong = client.post("/v1/predict", json={"inputs": [["Anna", 3]]})
        assert wrong.status_code == 422 and "pre-split words" in wrong.json()["detail"]
        assert client.get("/v1/model").json()["task"] == "tokens"


def _spans(rows: list[dict]) -> list[list[tuple]]:
    return [[(e["text"], e["type"], e["start"], e["end"]) for e in row["entities"]] for row in rows]


def test_onnx_export_keeps_parity_per_word_and_gives_the_same_entities(run, files, cli_env):
    onnx_dir = files["root"] / "onnx"
    done = subprocess.run([str(VENV_BIN / "transferkit"), "export", "--bundle", str(run.bundle_dir), "--out",
                           str(onnx_dir)], capture_output=True, text=True, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    parity = json.loads((onnx_dir / "transferkit.json").read_text())["onnx"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0 and parity["n_words"] > parity["n"]
    printed = " ".join(done.stderr.split())  # rich wraps long lines
    assert f"same tag on 100% of {parity['n_words']:,} words" in printed and "top-1" not in printed
    inputs = [*TEXTS, *WORDS, LONG]
    torch_rows = Predictor.from_bundle(run.bundle_dir).predict(Examples("text", inputs, None, "api")).rows
    onnx_predictor = Predictor.from_bundle(onnx_dir)
    assert onnx_predictor.runtime == "onnx"
    onnx_rows = onnx_predictor.predict(Examples("text", inputs, None, "api")).rows
    assert _spans(onnx_rows) == _spans(torch_rows) and [r["tags"] for r in onnx_rows] == [r["tags"] for r in torch_rows]
    scores = [[e["score"] for e in row["entities"]] for row in (*torch_rows, *onnx_rows)]
    np.testing.assert_allclose(sum(scores[len(inputs):], []), sum(scores[:len(inputs)], []), atol=1e-4)
    from_file = transferkit.predict(onnx_dir, str(files["test"]), runtime="onnx", progress=False)
    assert _spans(from_file.rows) == _spans(transferkit.predict(run.bundle_dir, str(files["test"]), progress=False).rows)
    with TestClient(create_app(onnx_predictor)) as client:
        served = client.post("/v1/predict", json={"inputs": inputs}).json()["predictions"]
    assert _spans(served) == _spans(torch_rows)


def test_int8_export_reports_its_agreement_per_word_tag(run, files):
    entry = transferkit.api.export(run.bundle_dir, files["root"] / "int8", int8=True)["int8"]
    agreement = entry["vs_fp32"]
    assert agreement["n_words"] > agreement["n"] and 0.5 <= agreement["top1_agreement"] <= 1.0
    accuracy = entry["accuracy"]
    assert accuracy["n"] > 0 and accuracy["n_words"] > accuracy["n"]
    assert {"accuracy_fp32", "accuracy_int8", "entity_f1_fp32", "entity_f1_int8"} <= set(accuracy)
    assert accuracy["entity_f1_fp32"] > 0.5  # the recorded split, tagged by the fp32 export
    rows = Predictor.from_bundle(files["root"] / "int8").predict(Examples("text", TEXTS, None, "api")).rows
    assert [len(r["tags"]) for r in rows] == [5, 4]


@pytest.mark.parametrize(("options", "message"), [
    ({"strategy": "distill"}, "needs --teacher"),
    ({"labels_per_class": 2}, "labels-per-class"),
    ({"task": "classification"}, "drop --task"),
])
def test_options_that_do_not_fit_tokens_are_refused(files, options, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        transferkit.fit(str(files["train"]), model="minilm", out=str(tmp_path / "r"), progress=False, **options)


def test_linear_probe_fits_a_per_token_logistic_head(files, tmp_path):
    result = transferkit.fit(str(files["train"]), model="minilm", strategy="linear-probe", out=str(tmp_path / "lp"),
                             progress=False)
    assert transferkit.evaluate(result.bundle_dir, str(files["test"]), progress=False)["entity_f1"] > 0.8
    assert "No before-vs-after: this run is the frozen-feature probe" in (result.run_dir / "report.md").read_text()


def test_report_shows_entity_f1_before_and_after_adaptation(run):
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    before, after = summary["before_adaptation"], summary["val"]  # no test file: the comparison is on val
    assert before["n"] == after["n"] and 0 <= before["entity_f1"] <= 1
    report = (run.run_dir / "report.md").read_text()
    section = report.split("## Before vs after adaptation", 1)[1]
    assert "| model | val entity F1 | val token accuracy |" in section
    assert f"| before: per-word logistic probe on frozen pretrained features | {before['entity_f1']:.4f} |" in section
    assert f"| after: finetune | {after['entity_f1']:.4f} | {after['token_accuracy']:.4f} |" in section
    gain = after["entity_f1"] - before["entity_f1"]
    statement = (f"is {-gain:.3f} of val entity F1 below" if gain < 0 else f"gained +{gain:.3f} of val entity F1")
    assert statement in section and statement in (run.run_dir / "report.html").read_text()


def test_task_tokens_on_texts_is_refused(text_csv, tmp_path):
    with pytest.raises(ConfigError, match="--task tokens needs tagged tokens"):
        transferkit.fit(str(text_csv), model="minilm", task="tokens", out=str(tmp_path / "r"), progress=False)


def test_doctor_names_a_test_entity_type_never_seen_in_training(files, tmp_path):
    # I-LOC never occurs in training, but LOC does: the model has I-LOC too, so only ORG is named
    test = write_conll(tmp_path / "t.conll", [[("Rome", "B-LOC"), ("City", "I-LOC"), ("FC", "B-ORG"), (".", "O")]])
    report = transferkit.api.doctor(str(files["train"]), test_data=str(test), model="minilm")
    found = [f for f in report.findings if f.kind == "unseen-tag"]
    assert len(found) == 1 and found[0].line == 3 and "'ORG' (B-ORG)" in found[0].message


def test_doctor_warns_about_tags_without_a_prefix_in_a_prefixed_file(files, tmp_path):
    data = sentences(20, 3)
    data[1][1] = (data[1][1][0], "0")  # a zero for 'O' on the second word of sentence 2
    data[2][-2] = (data[2][-2][0], "X-LOC")
    train = write_conll(tmp_path / "typo.conll", data)
    start = [1 + sum(len(s) + 1 for s in data[:i]) for i in range(3)]
    report = transferkit.api.doctor(str(train), model="minilm")
    found = {f.message.split("'")[1]: f for f in report.findings if f.kind == "unprefixed-tag"}
    assert set(found) == {"0", "X-LOC"} and all(f.severity == "warning" for f in found.values())
    assert found["0"].line == start[1] + 1 and "did you mean 'O'?" in found["0"].message
    assert found["X-LOC"].line == start[2] + len(data[2]) - 2 and "'B-LOC' or 'I-LOC'" in found["X-LOC"].message
    from transferkit.data.task_checks import HINT_KINDS  # fit prints the finding, not only its report
    assert "unprefixed-tag" in HINT_KINDS
    clean = transferkit.api.doctor(str(files["train"]), model="minilm")
    assert not [f for f in clean.findings if f.kind == "unprefixed-tag"]


def test_compare_ranks_by_entity_f1_against_the_word_crf(files, tmp_path):
    summary = compare(str(files["train"]), ["linear-probe", "head"], [None], out=str(tmp_path / "c"), model="minilm",
                      epochs=2, lr=1e-2, progress=False)
    assert summary["task"] == "tokens" and (summary["metric"], summary["second_metric"]) == ("entity_f1",
                                                                                               "token_accuracy")
    rows = {r["strategy"]: r for r in summary["rows"]}
    assert set(rows) == {"linear-probe", "head", "word-crf"} and summary["reference_name"] == "word-crf"
    assert summary["n_test"] == 12  # the fixed 20 % of the 60 sentences, whole sentences
    for row in rows.values():
        assert 0 <= row["entity_f1_mean"] <= 1 and row["entity_f1_std"] == 0.0 and 0 <= row["token_accuracy_mean"] <= 1
    assert rows["word-crf"]["entity_f1_mean"] > 0.8  # "<name> lives in <city>": context words give both slots away
    crf_gains = [g for g in summary["gains"] if g["baseline"] == "word-crf"]
    assert {g["strategy"] for g in crf_gains} == {"linear-probe", "head"}
    for g in crf_gains:
        assert g["gain_points"] == pytest.approx(rows[g["strategy"]]["entity_f1_mean"] - rows["word-crf"]["entity_f1_mean"])
        assert "of entity F1" in g["statement"] and ("BELOW word-crf" in g["statement"]) == (g["gain_points"] < 0)
    page = (tmp_path / "c" / "compare.html").read_text(encoding="utf-8")
    assert "test entity F1" in page and "token accuracy" in page and "CRF" in page
    with pytest.raises(ConfigError, match="--labels-per-class keeps K examples of each class, and a sentence"):
        compare(str(files["train"]), ["linear-probe"], [5], out=str(tmp_path / "no"), model="minilm")
    assert not (tmp_path / "no").exists()  # refused before any run


def test_strict_refuses_a_tag_that_does_not_fit_the_scheme_default_reads_it(files, tmp_path):
    rows = sentences(20, 2) + [[("Anna", "B-PER"), ("in", "O"), ("Rome", "B-LOC"), ("Smith", "I-PER")]]
    path = write_conll(tmp_path / "mixed.conll", rows)
    line = sum(len(s) + 1 for s in rows[:-1]) + 4
    with pytest.raises(DataError, match=rf"mixed\.conll:{line}: tag 'I-PER' follows 'B-LOC'"):
        transferkit.fit(str(path), model="minilm", strict=True, out=str(tmp_path / "r"), progress=False)
    report = transferkit.api.doctor(str(path), model="minilm")
    # default: the I-PER after B-LOC starts an entity (conlleval), so Anna and Smith are both B-PER
    assert report.stats["task"] == "tokens" and report.stats["tag_counts"]["B-PER"] == 20 + 2
