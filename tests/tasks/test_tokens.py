"""The tokens task contract: per-word head and loss, entity scores that agree with a hand count (default and
strict IOB2), windows that keep every word exactly once, batches whose rows are the words' first sub-words, and
the predict row with entities at character offsets."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from transferkit.backbones.text import minilm
from transferkit.data.examples import Examples
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.token_loader import TokenCollator, make_token_loader, plan_windows
from transferkit.evaluate.metrics import REPORTS
from transferkit.evaluate.token_report import worst_sentences
from transferkit.tasks import TASKS, TokensHead, TokensTask, get_task
from transferkit.tasks.model import TransferModel
from transferkit.train.inference import predict_logits

TAGS = ("B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O")
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-PER"]]
GUESS = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "I-ORG", "I-ORG", "O", "O"]]


def rows(sentences: list[list[str]]) -> np.ndarray:
    """[words, 2] targets: tag id, position in sentence."""
    return np.array([(TAGS.index(t), i) for s in sentences for i, t in enumerate(s)])


def test_registry_head_and_loss_ignoring_unlabelled_words():
    assert TASKS["tokens"] is TokensTask
    task = get_task("tokens")
    head = task.head(8, len(TAGS), names=TAGS)
    assert isinstance(head, TokensHead) and task.tags == TAGS
    hidden = torch.randn(2, 5, 8)
    logits = head(hidden, torch.tensor([1, 2, 6]))  # window 0 positions 1, 2; window 1 position 1
    assert logits.shape == (3, len(TAGS))
    assert torch.allclose(logits[2], head.linear(hidden[1, 1]))
    labels = torch.tensor([[0, 0], [-100, 1], [6, 0]])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 6]))
    assert head.loss(logits, labels).item() == pytest.approx(expected.item())
    assert task.loss(logits, labels).item() == pytest.approx(expected.item())


def test_entity_scores_agree_with_a_hand_count_in_default_and_strict_mode():
    gold, guess = rows(GOLD), rows(GUESS)[:, 0]
    # gold entities: PER 0-1, LOC 3 | ORG 1-2, PER 4 (4). Default mode reads I-ORG after O as a start, so the
    # guess has PER 0-1, ORG 3 | ORG 1-2 (3), of which PER 0-1 and ORG 1-2 are right: P 2/3, R 2/4, F1 4/7.
    scores = TokensTask(TAGS).metrics(gold, guess)
    assert scores["entity_precision"] == pytest.approx(2 / 3)
    assert scores["entity_recall"] == pytest.approx(1 / 2)
    assert scores["entity_f1"] == pytest.approx(4 / 7)
    assert scores["token_accuracy"] == pytest.approx(6 / 9)
    report = REPORTS["tokens"](gold, guess, TAGS)
    assert report["entity_f1"] == pytest.approx(4 / 7) and report["n"] == 2 and report["n_entities"] == 4
    assert report["per_type"]["PER"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["per_type"]["LOC"]["f1"] == 0.0 and report["per_type"]["ORG"]["precision"] == 0.5
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    # strict IOB2: the I-ORG I-ORG chunk is no entity: guess PER 0-1, ORG 3; only PER right: P 1/2, R 1/4, F1 1/3
    assert report["strict"]["entity_precision"] == pytest.approx(1 / 2)
    assert report["strict"]["entity_f1"] == pytest.approx(1 / 3)
    assert report["type_confusion"] == {"LOC": {"ORG": 1}, "ORG": {"ORG": 1}, "PER": {"-": 1, "PER": 1}}


def test_validation_row_and_selection_follow_entity_f1():
    task = TokensTask(TAGS)
    gold = rows(GOLD)
    outputs = np.eye(len(TAGS), dtype=np.float32)[rows(GUESS)[:, 0]] * 5
    row = task.validation(outputs, gold)
    assert set(row) == {"val_loss", *(f"val_{k}" for k in task.metric_names)}
    assert task.selection_metric in row and row["val_entity_f1"] == pytest.approx(4 / 7)
    assert task.selection_score(gold, rows(GOLD)[:, 0]) == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_windows_keep_every_word_exactly_once_within_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([1, 1, 2, 3, 9, 40]) for _ in range(rng.randint(1, 80))]
    budget, overlap = rng.choice([(10, 3), (16, 8), (12, 0), (64, 16)])
    windows = plan_windows(lengths, budget, overlap)
    owned = [w for window in windows for w in window.owned]
    assert sorted(owned) == list(range(len(lengths)))  # each word predicted once
    assert windows[0].start == 0 and windows[-1].end == len(lengths)
    for a, b in zip(windows, windows[1:]):
        assert a.start < b.start <= a.end  # moving forward, no gap
    for window in windows:
        assert sum(min(n, budget) for n in lengths[window.start:window.end]) <= budget
        assert all(window.start <= w < window.end for w in window.owned)


def test_a_word_is_predicted_from_the_window_where_it_is_most_central():
    windows = plan_windows([1] * 10, budget=6, overlap=3)
    assert [(w.start, w.end) for w in windows] == [(0, 6), (3, 9), (6, 10)]
    # centrality = sub-words to the nearer edge: word 3 has 2 in the first window, 0 in the second; word 4 ties
    # (1 and 1) and stays with the earlier window; word 5 has 0 there and 2 in the second
    assert [w.owned for w in windows] == [(0, 1, 2, 3, 4), (5, 6, 7), (8, 9)]


def test_batches_put_each_words_row_on_its_first_sub_word_also_across_windows():
    spec = minilm(pretrained=False).preprocessing
    short = PreprocessSpec(modality="text", tokenizer=spec.tokenizer, max_length=12)
    words = ["Transferkit", "tags", "unbelievably", "long", "sentences", "about", "Zürich", "and", "\u200b", "Kyiv",
             "without", "truncating", "them", "."]
    collator = TokenCollator(short)
    batch = collator([{"words": words, "index": 0, "labels": list(range(len(words)))}, {"words": ["ok"], "index": 1}])
    assert batch["input_ids"].shape[0] > 2 and batch["input_ids"].shape[1] <= 12  # several windows, none too long
    firsts = [pieces[0] for pieces in collator.pieces([words])[0]] + [collator.pieces([["ok"]])[0][0][0]]
    assert batch["input_ids"].reshape(-1)[batch["word_rows"]].tolist() == firsts
    assert batch["labels"].tolist() == [[i, i] for i in range(len(words))]
    assert collator.pieces([["\u200b"]])[0] == [[collator.tokenizer.unk_token_id]]  # a word with no pieces


def test_model_outputs_one_row_per_word_and_a_sentence_response_with_offsets():
    backbone = minilm()
    backbone.preprocessing = PreprocessSpec(modality="text", tokenizer=backbone.preprocessing.tokenizer, max_length=8)
    task = TokensTask(TAGS)
    model = TransferModel(backbone, task.head(backbone.feature_dim, len(TAGS), names=TAGS))
    sentences = [["Anna", "lives", "in", "Rome", "near", "the", "Colosseum", "since", "2019", "."], ["Hi", "!"]]
    examples = Examples("text", sentences, None, "mem")
    logits, labels = predict_logits(model, make_token_loader(examples, backbone.preprocessing, None, 2), "fp32")
    assert logits.shape == (12, len(TAGS)) and labels is None
    probabilities = np.zeros((2, len(TAGS)), np.float32)
    probabilities[0, TAGS.index("B-PER")], probabilities[1, TAGS.index("O")] = 0.75, 0.5
    text = "  Bob  waves"
    row = task.sentence_response(text, ["Bob", "waves"], probabilities, TAGS, digits=3)
    assert row["tags"] == ["B-PER", "O"]
    assert row["entities"] == [{"text": "Bob", "type": "PER", "start": 2, "end": 5, "score": 0.75}]


def test_worst_sentences_mark_gold_and_predicted_spans():
    words = [["Anna", "Smith", "in", "Rome"], ["ok"], ["New", "York", "!"]]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O"], ["B-LOC", "I-LOC", "O"]]
    guess = [["B-PER", "O", "O", "B-ORG"], ["O"], ["B-LOC", "I-LOC", "O"]]
    worst = worst_sentences(words, gold, guess)
    assert worst == [{"errors": 4, "gold": "[Anna Smith]PER in [Rome]LOC",
                      "predicted": "[Anna]PER Smith in [Rome]ORG"}]  # 2 gold spans missed, 2 wrong ones predicted


def test_distillation_is_kd_per_word_and_unlabeled_sentences_ignore_every_word():
    """Soft term: the T^2-scaled KL between tag distributions, one row per word (mean over words); an unlabeled
    sentence's target is IGNORE for each of its words, which the collator pairs with their positions."""
    from transferkit.tasks.classification import kd_loss
    from transferkit.tasks.tokens import IGNORE

    task = TokensTask(("O", "B-PER", "I-PER"))
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    t = 3.0
    p, q = (student / t).log_softmax(-1), (teacher / t).log_softmax(-1)
    expected = (q.exp() * (q - p)).sum(-1).mean() * t * t
    assert task.distill_loss(student, teacher, t, None).item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.distill_loss(teacher, teacher, t, None).item() == pytest.approx(0.0, abs=1e-6)
    assert task.distill_loss(student, teacher, t, None).item() == pytest.approx(kd_loss(student, teacher, t).item())
    assert task.missing_target(["Anna", "lives", "here"], 3) == [IGNORE] * 3
    targets = torch.tensor([[1, 0], [0, 1], [IGNORE, 0], [IGNORE, 1]])
    assert task.labeled(targets).tolist() == [True, True, False, False]


def test_tokens_train_in_batches_of_8_sentences_at_any_size_unless_set():
    from transferkit.tasks.classification import ClassificationTask
    from transferkit.train.config import TrainConfig

    assert TrainConfig().batch_size_for(1900, TokensTask.batch_size) == 8  # a sentence holds many labelled words
    assert TrainConfig().batch_size_for(1900, ClassificationTask.batch_size) == 32  # classification unchanged
    assert TrainConfig().batch_size_for(500, ClassificationTask.batch_size) == 8
    assert TrainConfig(batch_size=4).batch_size_for(1900, TokensTask.batch_size) == 4  # --batch-size wins
