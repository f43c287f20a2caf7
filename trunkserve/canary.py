"""Reference outputs a head carries, so a server can prove it serves the head correctly.

``make_canary`` runs trunk + head in PyTorch on a few texts and stores texts and
outputs; the hot-add path sends the same texts through the served ensemble and
compares within ``CANARY_ATOL`` before any traffic is routed to the new head.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .modules import Head, Trunk
from .specs import head_output_specs
from .tokenization import BucketTokenizer

CANARY_ATOL = 1e-3
DEFAULT_CANARY_TEXTS = (
    ("a gripping, beautifully acted film.", ""),
    ("the service was slow and the food was cold.", ""),
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
)


@torch.no_grad()
def reference_outputs(
    trunk: Trunk, head: Head, branch_layer: int, tokenizer: BucketTokenizer, texts: Sequence[tuple[str, str]]
) -> dict[str, list]:
    """Serving outputs (logits/probabilities or score) of trunk+head for ``texts``."""
    enc = tokenizer.encode([a for a, _ in texts], [b for _, b in texts])
    t = {k: torch.from_numpy(v) for k, v in enc.as_dict().items()}
    hidden = trunk(t["input_ids"], t["attention_mask"], t["token_type_ids"])[list(trunk.depths).index(branch_layer)]
    outs = head.eval().serving_outputs(hidden, t["attention_mask"])
    names = [s.name for s in head_output_specs(head.task_type, head.num_labels)]
    return {n: o.tolist() for n, o in zip(names, outs)}


def make_canary(
    trunk: Trunk,
    head: Head,
    branch_layer: int,
    tokenizer: BucketTokenizer,
    texts: Sequence[tuple[str, str]] = DEFAULT_CANARY_TEXTS,
) -> dict:
    trunk.eval()
    return {
        "texts": [list(p) for p in texts],
        "outputs": reference_outputs(trunk, head, branch_layer, tokenizer, texts),
        "atol": CANARY_ATOL,
    }
