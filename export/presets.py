"""Every family's architecture presets: the one place their names and values live.

A preset is what random weights are built with (``random:<preset>``) and what a loaded config is
matched against (the manifest's ``preset``: a preset's name, or ``custom``). Pure data: the family
modules read it, and the exporters build from it.
"""
from __future__ import annotations

import copy
from typing import Any

# ------------------------------------------------------------------------------------ emotion2vec+

_FEATURE_ENCODER_512 = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"

_DECODER_BASE = dict(
    decoder_dim=384, decoder_groups=16, decoder_kernel=7, decoder_layers=4, input_dropout=0.1,
    add_positions_masked=False, add_positions_all=False, decoder_residual=True,
    projection_layers=1, projection_ratio=2.0,
)
# The published emotion2vec_plus_large config.yaml's audio decoder (pretraining only; built by FunASR,
# stored in model.pt, never run at inference).
_DECODER_PLUS_LARGE = dict(_DECODER_BASE, decoder_dim=768)


def _make_conf(
    *, embed_dim: int, depth: int, num_heads: int, prenet_depth: int,
    feature_encoder_spec: str = _FEATURE_ENCODER_512, num_extra_tokens: int = 10,
    conv_pos_width: int = 95, conv_pos_depth: int = 5, conv_pos_groups: int = 16,
    decoder: dict | None = None, average_top_k_layers: int | None = None,
) -> dict[str, Any]:
    """A FunASR ``model_conf`` for ``Emotion2vec`` (keys as in the published config.yaml).

    Dropout / layerdrop / masking values only matter in training; the model is used in eval.
    """
    audio = dict(
        type="AUDIO",
        prenet_depth=prenet_depth, prenet_layerdrop=0.0, prenet_dropout=0.1,
        start_drop_path_rate=0.0, end_drop_path_rate=0.0,
        num_extra_tokens=num_extra_tokens, init_extra_token_zero=True,
        mask_noise_std=0.01, mask_prob_min=None, mask_prob=0.55, inverse_mask=False,
        mask_prob_adjust=0.1, keep_masked_pct=0.0, mask_length=5, add_masks=False,
        remove_masks=False, mask_dropout=0.0, encoder_zero_mask=True,
        mask_channel_prob=0.0, mask_channel_length=64,
        ema_local_encoder=False, local_grad_mult=1.0,
        use_alibi_encoder=True, alibi_scale=1.0, learned_alibi=False, alibi_max_pos=None,
        learned_alibi_scale=True, learned_alibi_scale_per_head=True,
        learned_alibi_scale_per_layer=False, num_alibi_heads=num_heads,
        model_depth=depth,
        decoder=copy.deepcopy(decoder),
        extractor_mode="layer_norm",
        feature_encoder_spec=feature_encoder_spec,
        conv_pos_width=conv_pos_width, conv_pos_groups=conv_pos_groups,
        conv_pos_depth=conv_pos_depth, conv_pos_pre_ln=False,
    )
    return dict(
        loss_beta=0.0, loss_scale=None,
        depth=depth, start_drop_path_rate=0.0, end_drop_path_rate=0.0,
        num_heads=num_heads, norm_eps=1e-05, norm_affine=True,
        encoder_dropout=0.1, post_mlp_drop=0.1, attention_dropout=0.1,
        activation_dropout=0.0, dropout_input=0.0, layerdrop=0.0,
        embed_dim=embed_dim, mlp_ratio=4.0, layer_norm_first=False,
        average_top_k_layers=average_top_k_layers or depth, end_of_block_targets=False, clone_batch=12,
        normalize=True, supported_modality="AUDIO",
        modalities=dict(audio=audio),
    )


EMOTION2VEC: dict[str, dict[str, Any]] = {
    # Tests only: the real code path (layer_norm conv front end with the real kernels/strides, so 50
    # frames/s; 10 extra tokens; ALiBi with learned per-head scale; 5 grouped position convs; post-LN
    # blocks) at tiny widths.
    "tiny": _make_conf(
        embed_dim=64, depth=2, num_heads=4, prenet_depth=1,
        feature_encoder_spec="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]",
    ),
    # The plus_large architecture at emotion2vec_base's width (768, 12 heads), with its 384-wide decoder.
    "base": _make_conf(embed_dim=768, depth=8, num_heads=12, prenet_depth=4, decoder=_DECODER_BASE),
    # The published iic/emotion2vec_plus_large config.yaml: 8 blocks after a 4-block prenet at width 1024,
    # 16 heads, a 768-wide pretraining decoder (about 164 M parameters under FunASR 1.4.16).
    "large": _make_conf(embed_dim=1024, depth=8, num_heads=16, prenet_depth=4, decoder=_DECODER_PLUS_LARGE,
                        average_top_k_layers=16),
}
# What no source confirms, for random weights of each preset (UNCONFIRMED) and for a folder whose config
# matches it (UNCONFIRMED_LOADED: the folder's own config describes the architecture then).
_CARD_300M = ("the model card of emotion2vec_plus_large says ~300M parameters; its published config.yaml (which "
              "the published model.pt fits) builds about 164M under FunASR 1.4.16: the card's figure stays "
              "unconfirmed")
EMOTION2VEC_UNCONFIRMED: dict[str, list[str]] = {
    "tiny": ["all sizes are made up for tests (not a released model)"],
    "base": [
        "no published config.yaml of emotion2vec_plus_base was found: this is the plus_large config at "
        "emotion2vec_base's width (768, 12 heads) with a 384-wide pretraining decoder, both from a "
        "third-party port of emotion2vec_base",
    ],
    "large": [_CARD_300M],
}
EMOTION2VEC_UNCONFIRMED_LOADED: dict[str, list[str]] = {"large": [_CARD_300M]}

# ------------------------------------------------------------------------------------ SenseVoice

# iic/SenseVoiceSmall's published config.yaml: encoder SenseVoiceEncoderSmall with these values;
# input_size = frontend n_mels * lfr_m = 560 (AutoModel sets it from the frontend); vocab 25055 =
# pieces of chn_jpn_yue_eng_ko_spectok.bpe.model.
_SMALL_ENCODER = {
    "output_size": 512, "attention_heads": 4, "linear_units": 2048, "num_blocks": 50, "tp_blocks": 20,
    "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
    "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
    "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
}
SENSEVOICE_FEAT_DIM = 80 * 7  # n_mels * lfr_m

SENSEVOICE: dict[str, dict[str, Any]] = {
    "tiny": {
        "encoder_conf": {**_SMALL_ENCODER, "output_size": 128, "attention_heads": 4, "linear_units": 256,
                         "num_blocks": 3, "tp_blocks": 1},
        "input_size": SENSEVOICE_FEAT_DIM,
        "vocab_size": 320,  # stand-in tokenizer size for tests
        "source": "test-sized variant of the SenseVoiceSmall architecture",
    },
    "small": {
        "encoder_conf": dict(_SMALL_ENCODER),
        "input_size": SENSEVOICE_FEAT_DIM,
        "vocab_size": 25055,
        "source": "encoder_conf of iic/SenseVoiceSmall's published config.yaml (234.0M parameters, as published)",
    },
}
SENSEVOICE_UNCONFIRMED: dict[str, list[str]] = {
    "tiny": ["all sizes are made up for tests (not a released model)"],
    "small": [],
}
SENSEVOICE_UNCONFIRMED_LOADED: dict[str, list[str]] = {}

# ------------------------------------------------------------------------------------ silero VAD

# One "preset": the graph the silero-vad wheel ships.
SILERO_VAD: dict[str, dict[str, Any]] = {"wheel": {"source": "silero_vad/data/silero_vad.onnx of the installed wheel"}}
SILERO_VAD_UNCONFIRMED: dict[str, list[str]] = {"wheel": []}

# ------------------------------------------------------------------------------------ speaker (diarization)
# Speaker-embedding encoders. Every graph: wav [batch, samples] + wav_lens [batch] -> embedding [batch, dim]
# (L2-normalised). ``min_samples``: the shortest input whose embedding is meaningful (shorter ones still give
# an embedding, from mostly zero padding).

# Resemblyzer's GE2E encoder (resemblyzer 0.1.4, hparams.py): LSTM 40 -> 256, 3 layers, Linear 256 -> 256,
# ReLU, L2 norm, on 40-mel power spectrograms (25 ms / 10 ms) of 1.6 s partial utterances.
_RESEMBLYZER = {
    "encoder": "resemblyzer", "embedding_dim": 256, "mel_n_channels": 40, "model_hidden_size": 256,
    "model_num_layers": 3, "partials_n_frames": 160, "rate": 1.3, "min_coverage": 0.75,
    # The coverage rule's own threshold: 75 % of one 1.6 s partial (embed_utterance drops a last partial
    # with less audio than this whenever it has another).
    "min_samples": 19200,
}
# CAM++ (3D-Speaker; FunASR's CAMPPlus defaults, which are iic/speech_campplus_sv_zh-cn_16k-common's
# architecture): 80-dim fbank, 192-d embeddings.
_CAMPPLUS_CONF = {"feat_dim": 80, "embedding_size": 192, "growth_rate": 32, "bn_size": 4, "init_channels": 128,
                  "config_str": "batchnorm-relu", "memory_efficient": True, "output_level": "segment"}

SPEAKER: dict[str, dict[str, Any]] = {
    # The default of `toneserve export` (--size tiny and base): Resemblyzer's real weights from its wheel,
    # recorded as source kind "package". build.py reaches a family's default only as "random:<preset>", so
    # this preset name means "the wheel's weights", not random ones.
    "resemblyzer_wheel": {**_RESEMBLYZER, "weights": "package",
                          "source": "resemblyzer/pretrained.pt of the installed resemblyzer wheel (real weights)"},
    # The same architecture, random weights (tests; outputs meaningless).
    "resemblyzer": {**_RESEMBLYZER, "weights": "random", "source": "resemblyzer 0.1.4's VoiceEncoder architecture"},
    # CAM++ through FunASR's CAMPPlus: random weights of the published architecture, or a folder's weights.
    "campplus": {"encoder": "campplus", "embedding_dim": 192, "model_conf": dict(_CAMPPLUS_CONF),
                 # 3D-Speaker's diarization embeds 1.5 s sub-segments (shift 0.75 s).
                 "min_samples": 24000, "weights": "random",
                 "source": "FunASR CAMPPlus defaults = iic/speech_campplus_sv_zh-cn_16k-common's architecture"},
    # WeSpeaker's ResNet34 (VoxCeleb, large-margin fine-tuned) from its published ONNX (Hugging Face
    # Wespeaker/wespeaker-voxceleb-resnet34-LM, voxceleb_resnet34_LM.onnx); a folder only, no random weights.
    "wespeaker_resnet34": {"encoder": "wespeaker", "embedding_dim": 256, "onnx": "voxceleb_resnet34_LM.onnx",
                           # WeSpeaker's diarization recipe embeds 1.5 s windows (shift 0.75 s).
                           "min_samples": 24000, "weights": "folder",
                           "source": "Wespeaker/wespeaker-voxceleb-resnet34-LM's voxceleb_resnet34_LM.onnx"},
}
SPEAKER_UNCONFIRMED: dict[str, list[str]] = {
    "resemblyzer_wheel": [],
    "resemblyzer": [],
    "campplus": ["the published config.yaml of iic/speech_campplus_sv_zh-cn_16k-common was not reachable here: "
                 "the architecture is FunASR's CAMPPlus defaults (6.85 M parameters under FunASR 1.x; 3D-Speaker's "
                 "card says 7.2 M)"],
    "wespeaker_resnet34": ["the published voxceleb_resnet34_LM.onnx was not reachable here: the wrapping was tested "
                           "on a stand-in graph with its IO (feats [B, T, 80] -> embs [B, 256]); WeSpeaker's "
                           "compute_fbank settings (hamming, x32768, mean-normalised) are from its code"],
}
SPEAKER_UNCONFIRMED_LOADED: dict[str, list[str]] = {}

# ------------------------------------------------------------------------------------ text sentiment
# Hugging Face sequence classifiers (transformers' AutoModelForSequenceClassification). ``config`` is what
# the folder's config.json holds (AutoConfig.for_model(model_type, **config)); ``tokenizer`` says how random
# weights get a tokenizer (``toneserve.export.text_sentiment.build_tokenizer``: a vocabulary built from the
# project's own multilingual texts, never the published one). Labels are always read from id2label in id
# order; these are the published models' own.
_SENTIMENT_PND = {0: "positive", 1: "neutral", 2: "negative"}  # lxyuan's id2label
_SENTIMENT_NNP = {0: "negative", 1: "neutral", 2: "positive"}  # cardiffnlp's id2label


def _labels(id2label: dict[int, str]) -> dict[str, Any]:
    return {"id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}}


TEXT_SENTIMENT: dict[str, dict[str, Any]] = {
    # lxyuan/distilbert-base-multilingual-cased-sentiments-student: distilbert-base-multilingual-cased
    # (cased WordPiece, 119547 pieces) distilled into a 3-way sentiment head.
    "distilbert_multilingual": {
        "architecture": "DistilBertForSequenceClassification",
        "config": {"model_type": "distilbert", "vocab_size": 119547, "dim": 768, "n_layers": 6, "n_heads": 12,
                   "hidden_dim": 3072, "max_position_embeddings": 512, "activation": "gelu", "pad_token_id": 0,
                   "sinusoidal_pos_embds": False, "initializer_range": 0.02, "dropout": 0.1,
                   "attention_dropout": 0.1, "seq_classif_dropout": 0.2, "qa_dropout": 0.1,
                   **_labels(_SENTIMENT_PND)},
        "tokenizer": {"kind": "wordpiece", "lowercase": False},
        "source": "config.json of lxyuan/distilbert-base-multilingual-cased-sentiments-student (Hugging Face)",
    },
    # cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual: XLM-RoBERTa base (sentencepiece unigram,
    # 250002 pieces, <pad> = 1, positions start after it) with a 3-way sentiment head.
    "xlmr_twitter": {
        "architecture": "XLMRobertaForSequenceClassification",
        "config": {"model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 514,
                   "type_vocab_size": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-05, "pad_token_id": 1,
                   "bos_token_id": 0, "eos_token_id": 2, "position_embedding_type": "absolute",
                   "initializer_range": 0.02, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                   **_labels(_SENTIMENT_NNP)},
        "tokenizer": {"kind": "unigram"},
        "source": "config.json of cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual (Hugging Face)",
    },
    # Tests and `--size tiny`: DistilBERT at tiny widths with lxyuan's labels. A wider initialisation than
    # the published models' 0.02, so that random weights give probabilities that differ between sentences
    # (at 0.02 every sentence is about 1/3 each, and every gate would compare near-constants).
    "distilbert_tiny": {
        "architecture": "DistilBertForSequenceClassification",
        "config": {"model_type": "distilbert", "vocab_size": 2048, "dim": 32, "n_layers": 2, "n_heads": 2,
                   "hidden_dim": 64, "max_position_embeddings": 512, "activation": "gelu", "pad_token_id": 0,
                   "sinusoidal_pos_embds": False, "initializer_range": 0.2, "dropout": 0.1,
                   "attention_dropout": 0.1, "seq_classif_dropout": 0.2, "qa_dropout": 0.1,
                   **_labels(_SENTIMENT_PND)},
        "tokenizer": {"kind": "wordpiece", "lowercase": False},
        "source": "test-sized DistilBERT with the labels of lxyuan/distilbert-base-multilingual-cased-sentiments-student",
    },
}
_TEXT_NOT_FETCHED = ("the published config.json was not reachable here: the architecture values (sizes, vocab_size, "
                     "max_position_embeddings, activation, pad_token_id, id2label) are as the model card / config "
                     "describe it; ")
TEXT_SENTIMENT_UNCONFIRMED: dict[str, list[str]] = {
    "distilbert_multilingual": [
        _TEXT_NOT_FETCHED + "dropout, attention_dropout, seq_classif_dropout, qa_dropout, initializer_range and "
        "sinusoidal_pos_embds are DistilBERT's defaults (inference does not use the dropouts)",
        "random weights get a WordPiece vocabulary built from the project's own texts (a few hundred pieces), not "
        "bert-base-multilingual-cased's 119547: token ids and outputs are meaningless",
    ],
    "xlmr_twitter": [
        _TEXT_NOT_FETCHED + "layer_norm_eps, bos/eos ids, position_embedding_type, initializer_range and the "
        "dropouts are XLM-RoBERTa base's defaults",
        "random weights get a unigram vocabulary built from the project's own texts (no sentencepiece normaliser), "
        "not XLM-R's 250002 pieces: token ids and outputs are meaningless",
    ],
    "distilbert_tiny": ["all sizes are made up for tests (not a released model)"],
}
TEXT_SENTIMENT_UNCONFIRMED_LOADED: dict[str, list[str]] = {}
