"""Downsampler shapes, masks, trimming and batch independence (spec §2.4)."""

import pytest
import torch

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.model.config import DownsamplerSpec
from cmirm_plugin.model.downsample import (
    ConvSiLU, ConvSiLUTwice, GLUConvSiLUTwicePlusPointwise, Identity, MeanPool, MeanPoolMLP, build_downsampler,
    two_stage_strides,
)
from cmirm_plugin.model.sequence import TokenSeq

D = 8


def _batch(lengths, total=None, seed=0):
    torch.manual_seed(seed)
    total = total or max(lengths)
    x = torch.randn(len(lengths), total, D)
    mask = torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]
    return TokenSeq(x, mask)


def test_identity_keeps_padding_values():
    seq = _batch([5, 2])
    out = Identity()(seq)
    assert torch.equal(out.x, seq.x) and torch.equal(out.mask, seq.mask)


def test_meanpool_windows_trimming_and_values():
    seq = _batch([7, 3])
    out = MeanPool(2)(seq)
    assert out.x.shape == (2, 3, D)  # 7 -> trimmed to 6 -> 3 windows
    assert out.mask.tolist() == [[True, True, True], [True, False, False]]  # item 2: 3 -> 2 tokens -> 1 window
    torch.testing.assert_close(out.x[0, 2], seq.x[0, 4:6].mean(0))
    torch.testing.assert_close(out.x[1, 0], seq.x[1, 0:2].mean(0))
    assert float(out.x[1, 1:].abs().max()) == 0.0  # empty windows are zero


def test_meanpool_factor_one_zeroes_padding():
    seq = _batch([4, 2])
    out = MeanPool(1)(seq)
    assert torch.equal(out.mask, seq.mask)
    assert float(out.x[1, 2:].abs().max()) == 0.0 and torch.equal(out.x[0], seq.x[0])


def test_meanpool_mlp_and_pre_mlp():
    seq = _batch([6, 4])
    post = MeanPoolMLP(D, factor=3)
    out = post(seq)
    assert out.x.shape == (2, 2, D) and out.mask.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(out.x[0, 1], post.mlp(seq.x[0, 3:6].mean(0)))
    pre = MeanPoolMLP(D, factor=3, pre_mlp=True)
    torch.testing.assert_close(pre(seq).x[0, 0], pre.mlp(seq.x[0, :3]).mean(0))
    assert sum(p.numel() for p in MeanPoolMLP(768, 2).parameters()) == 2_361_600


@pytest.mark.parametrize("factor,strides", [(1, (1, 1)), (2, (1, 2)), (3, (3, 1)), (4, (2, 2)), (5, (1, 5)),
                                            (6, (3, 2)), (8, (2, 4)), (9, (3, 3)), (10, (2, 5)), (12, (3, 4)),
                                            (16, (4, 4))])
def test_two_stage_strides_table(factor, strides):
    assert two_stage_strides(factor) == strides


def test_unsupported_two_stage_factor():
    with pytest.raises(ConfigError, match="factor 7 has no two-stage stride split"):
        two_stage_strides(7)


def test_conv_twice_shapes_and_masks():
    seq = _batch([9, 5])
    ds = ConvSiLUTwice(D, factor=4)  # strides (2, 2)
    with torch.no_grad():
        out = ds(seq)
    assert out.x.shape == (2, 2, D)   # 9 -> 8 -> 4 -> 2
    assert out.mask.tolist() == [[True, True], [True, False]]  # 5 -> 4 -> 2 -> 1
    assert float(out.x[1, 1].abs().max()) == 0.0
    assert sum(p.numel() for p in ConvSiLUTwice(768, 4).parameters()) == 10_752
    assert sorted(ds.state_dict()) == ["block1.dw.weight", "block1.ln.bias", "block1.ln.weight",
                                       "block2.dw.weight", "block2.ln.bias", "block2.ln.weight"]


def test_conv_stages_share_weights():
    ds = ConvSiLU(D, factor=2, stage=2)
    assert ds.blocks[0] is ds.blocks[1]
    out = ds(_batch([8, 7]))
    assert out.x.shape == (2, 2, D) and out.mask.tolist() == [[True, True], [True, False]]  # 7->6->3->2->1
    assert {"blocks.0.dw.weight", "blocks.1.dw.weight"} <= set(ds.state_dict())
    assert sum(p.numel() for p in ConvSiLU(768, 2).parameters()) == 5_376


def test_gluconv_shapes_and_param_count():
    ds = GLUConvSiLUTwicePlusPointwise(D, factor=3)  # strides (3, 1)
    out = ds(_batch([10, 4]))
    assert out.x.shape == (2, 3, D) and out.mask.tolist() == [[True, True, True], [True, False, False]]
    assert sum(p.numel() for p in GLUConvSiLUTwicePlusPointwise(768, 4).parameters()) == 2_959_872
    assert {"block1.pw1.weight", "block2.dw.weight", "final_pw.weight"} <= set(ds.state_dict())


KINDS = [
    {"kind": "none"}, {"kind": "meanpool", "factor": 2}, {"kind": "mean+mlp", "factor": 3},
    {"kind": "meanpool+mlp", "factor": 2, "pre_mlp": True}, {"kind": "b2", "factor": 4},
    {"kind": "conv", "factor": 2, "stage": 2}, {"kind": "b3", "factor": 6},
]


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s["kind"])
def test_item_result_does_not_depend_on_batch(spec):
    """An item padded inside a longer batch gives exactly its stand-alone output."""
    torch.manual_seed(3)
    ds = build_downsampler(DownsamplerSpec.from_dict("x", spec), D).eval()
    long_item, short_item = torch.randn(23, D), torch.randn(11, D)
    batch = ds(TokenSeq.pad([long_item, short_item], D))
    for row, item in enumerate((long_item, short_item)):
        alone = ds(TokenSeq.pad([item], D))
        n = int(alone.mask.sum())
        assert int(batch.mask[row].sum()) == n
        torch.testing.assert_close(batch.x[row, :n], alone.x[0, :n], atol=1e-6, rtol=1e-6)


def test_empty_sequence_passes_through_every_kind():
    for spec in KINDS:
        ds = build_downsampler(DownsamplerSpec.from_dict("x", spec), D)
        out = ds(TokenSeq.empty(2, D, "cpu", torch.float32))
        assert out.x.shape[0] == 2 and out.x.shape[1] == 0 and not bool(out.mask.any())


def test_missing_reference_token_is_trimmed_or_stays_masked():
    ref = TokenSeq(torch.zeros(1, 1, D), torch.zeros(1, 1, dtype=torch.bool))  # the official "no ref"
    assert MeanPool(2)(ref).x.shape[1] == 0
    assert not bool(Identity()(ref).mask.any())
