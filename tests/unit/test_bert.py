"""Our export-friendly BERT against Hugging Face's, and the trunk/head split against the whole encoder."""

import numpy as np
import pytest
import torch

from trunkserve.bert import mask_bias
from trunkserve.fingerprint import trunk_fingerprint
from trunkserve.modules import Head, Trunk

SENTENCES = [("The quick brown fox jumps.", ""), ("Is it raining?", "No, it is sunny."), ("ok", "")]


def _feeds(tokenizer):
    enc = tokenizer.encode([a for a, _ in SENTENCES], [b for _, b in SENTENCES])
    return {k: torch.from_numpy(v) for k, v in enc.as_dict().items()}


def test_trunk_matches_transformers(backbone, tokenizer):
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertModel.from_pretrained(str(backbone.path)).eval()
    feeds = _feeds(tokenizer)
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [2, 4]).eval()
    with torch.no_grad():
        want = ref(**feeds, output_hidden_states=True).hidden_states
        h2, h4 = trunk(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
    keep = feeds["attention_mask"].bool()  # padded positions are never read by a head
    assert torch.allclose(h2[keep], want[2][keep], atol=1e-4)
    assert torch.allclose(h4[keep], want[4][keep], atol=1e-4)


def test_trunk_runs_only_to_deepest_depth(backbone):
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [1, 3])
    assert len(trunk.layers) == 3 and trunk.depths == (1, 3)
    with pytest.raises(ValueError):
        Trunk(backbone.config, [7])


def test_trunk_plus_head_layers_equal_whole_encoder(backbone, tokenizer):
    feeds = _feeds(tokenizer)
    full = Trunk.from_state_dict(backbone.config, backbone.state_dict, [6]).eval()
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [3]).eval()
    head = Head.from_backbone_layers(backbone.config, backbone.state_dict, 3, 3, 2).eval()
    with torch.no_grad():
        (whole,) = full(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        (h,) = trunk(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        for layer in head.layers:
            h = layer(h, mask_bias(feeds["attention_mask"]))
    assert torch.equal(h, whole)


def test_fingerprint_is_stable_and_sensitive(backbone, trunk):
    files = backbone.tokenizer_files()
    fp = trunk_fingerprint(backbone.state_dict, 3, files)
    assert fp == trunk_fingerprint(trunk.state_dict(), 3, files)  # HF names or Trunk names, same hash
    assert fp != trunk_fingerprint(backbone.state_dict, 2, files)
    # a layer above the depth does not matter, one below does
    changed = dict(backbone.state_dict)
    changed["encoder.layer.5.output.dense.bias"] = changed["encoder.layer.5.output.dense.bias"] + 1
    assert trunk_fingerprint(changed, 3, files) == fp
    changed["encoder.layer.0.output.dense.bias"] = changed["encoder.layer.0.output.dense.bias"] + 1e-3
    assert trunk_fingerprint(changed, 3, files) != fp
    assert trunk_fingerprint(backbone.state_dict, 3, files[:1]) != fp


def test_head_outputs(backbone):
    reg = Head(backbone.config, 1, 5, "regression")
    assert reg.num_labels == 1
    hidden = torch.randn(2, 8, backbone.config.hidden_size)
    mask = torch.ones(2, 8, dtype=torch.int64)
    clf = Head(backbone.config, 0, 3).eval()
    logits, probs = clf.serving_outputs(hidden, mask)
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(-1).detach().numpy(), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        Head(backbone.config, 1, 2, "ranking")


@pytest.mark.parametrize("num_layers", [1, 2])
def test_head_last_layer_first_token_only_is_exact(backbone, tokenizer, num_layers):
    """The head computes its last layer at [CLS] only; the pooled output must equal the whole-sequence one."""
    feeds = _feeds(tokenizer)
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [3]).eval()
    head = Head.from_backbone_layers(backbone.config, backbone.state_dict, 3, num_layers, 2).eval()
    with torch.no_grad():
        (h,) = trunk(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        bias = mask_bias(feeds["attention_mask"])
        whole = h
        for layer in head.layers:
            whole = layer(whole, bias)  # every position, as BERT computes it
        want = head.classifier(head.pooler(whole))
        last = head.layers[-1](h if num_layers == 1 else head.layers[0](h, bias), bias, first_token_only=True)
        got = head(h, feeds["attention_mask"])
        absorbed = head(h, feeds["attention_mask"], absorbed=True)
    assert last.shape == (h.shape[0], 1, h.shape[2])
    torch.testing.assert_close(last[:, 0], whole[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(absorbed, want, atol=1e-5, rtol=0)


def test_absorbed_first_token_attention_equals_the_plain_form(backbone):
    """Keys and values folded into the [CLS] query: same output, padded positions still ignored."""
    layer = Head.from_backbone_layers(backbone.config, backbone.state_dict, 3, 1, 2).layers[0].eval()
    torch.manual_seed(0)
    hidden = torch.randn(3, 11, backbone.config.hidden_size) * 2
    mask = torch.ones(3, 11, dtype=torch.int64)
    mask[1, 4:] = 0
    mask[2, 1:] = 0  # [CLS] alone
    bias = mask_bias(mask)
    with torch.no_grad():
        plain = layer(hidden, bias, first_token_only=True)
        folded = layer(hidden, bias, first_token_only=True, absorbed=True)
        # What lies beyond the mask must not matter to the folded form either.
        noisy = hidden.clone()
        noisy[mask == 0] = 50.0
        folded_noisy = layer(noisy, bias, first_token_only=True, absorbed=True)
    torch.testing.assert_close(folded, plain, atol=2e-5, rtol=0)
    torch.testing.assert_close(folded_noisy, plain, atol=2e-5, rtol=0)


def test_packed_trunk_equals_the_padded_form_at_real_tokens(backbone, tokenizer):
    """Per-token work on the real tokens only: same hidden states where a head reads them, zeros elsewhere."""
    feeds = _feeds(tokenizer)
    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    assert (mask == 0).any()  # the batch has padding to skip
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [0, 1, 3]).eval()
    with torch.no_grad():
        padded = trunk(ids, mask, types)
        packed = trunk(ids, mask, types, packed=True)
    real = mask.bool()
    for want, got in zip(padded, packed):
        assert got.shape == want.shape
        torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    assert torch.equal(packed[2][~real], torch.zeros_like(packed[2][~real]))
    # A row with no real token (only reachable by calling the trunk model directly) stays finite.
    empty = torch.zeros_like(mask[:1])
    with torch.no_grad():
        (out,) = Trunk.from_state_dict(backbone.config, backbone.state_dict, [2]).eval()(ids[:1], empty, types[:1], packed=True)
    assert torch.equal(out, torch.zeros_like(out))


def test_packed_head_layers_equal_the_padded_form(backbone, tokenizer):
    """A two-layer head served (packed first layer, folded last layer) against its training form."""
    feeds = _feeds(tokenizer)
    trunk = Trunk.from_state_dict(backbone.config, backbone.state_dict, [3]).eval()
    head = Head.from_backbone_layers(backbone.config, backbone.state_dict, 3, 2, 2).eval()
    with torch.no_grad():
        (h,) = trunk(feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        noisy = h.clone()
        noisy[feeds["attention_mask"] == 0] = 50.0  # padded positions must not matter
        want = head.serving_outputs(h, feeds["attention_mask"], served=False)
        got = head.serving_outputs(noisy, feeds["attention_mask"], served=True)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=0)
