"""The MuLan-style transformer block math on hand-checked cases (spec §2.3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from cmirm_plugin.model.blocks import GEGLU, Attention, LayerNorm, Transformer, feed_forward


def test_geglu_order_is_x_then_gate():
    x = torch.tensor([[2.0, 3.0, 1.0, -1.0]])  # x = [2, 3], gate = [1, -1]
    expected = torch.tensor([[2.0 * F.gelu(torch.tensor(1.0)), 3.0 * F.gelu(torch.tensor(-1.0))]])
    torch.testing.assert_close(GEGLU()(x), expected)


def test_layernorm_has_learned_gain_and_zero_bias():
    ln = LayerNorm(3)
    ln.learned_gamma.data = torch.tensor([1.0, 2.0, 3.0])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    normed = (x - 2.0) / math.sqrt(2.0 / 3.0 + 1e-5)
    torch.testing.assert_close(ln(x), normed * torch.tensor([1.0, 2.0, 3.0]))
    assert [n for n, _ in ln.named_parameters()] == ["learned_gamma"]
    assert "beta" not in ln.state_dict()


def test_feed_forward_hidden_size_and_keys():
    ff = feed_forward(768, 4)
    assert ff[1].weight.shape == (4096, 768) and ff[4].weight.shape == (768, 2048)
    assert sorted(ff.state_dict()) == ["0.learned_gamma", "1.weight", "4.weight"]


def _manual_attention(attn: Attention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention written out by hand: QK L2-norm x learned scales, softmax(8 q.k + mask) v."""
    h = attn.heads
    xn = F.layer_norm(x, x.shape[-1:], attn.norm.learned_gamma, torch.zeros(x.shape[-1]), eps=1e-5)
    q = xn @ attn.to_q.weight.T
    kv = xn @ attn.to_kv.weight.T
    k, v = kv[..., : q.shape[-1]], kv[..., q.shape[-1]:]
    outs = []
    d = q.shape[-1] // h
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        qh = q[..., sl] / q[..., sl].norm(dim=-1, keepdim=True) * attn.q_scale
        kh = k[..., sl] / k[..., sl].norm(dim=-1, keepdim=True) * attn.k_scale
        logits = 8.0 * qh @ kh.transpose(-1, -2)
        if mask is not None:
            logits = logits + (~mask[:, None, :]).float() * -1e9
        outs.append(torch.softmax(logits, dim=-1) @ v[..., sl])
    return torch.cat(outs, dim=-1) @ attn.to_out[0].weight.T


def test_attention_matches_hand_computation_with_scale_8_and_qk_norm():
    torch.manual_seed(0)
    attn = Attention(dim=6, dim_head=2, heads=2)
    attn.q_scale.data = torch.tensor([0.5, 2.0])
    attn.k_scale.data = torch.tensor([1.5, 0.7])
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    torch.testing.assert_close(attn(x, mask), _manual_attention(attn, x, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x), _manual_attention(attn, x, None), atol=1e-5, rtol=1e-5)


def test_scale_is_8_not_inverse_sqrt_d():
    # Two keys whose normalised dot products with q are 1 and 0: weights are softmax([8, 0]).
    attn = Attention(dim=2, dim_head=2, heads=1)
    attn.norm.learned_gamma.data = torch.ones(2)
    attn.to_q.weight.data = torch.eye(2)
    attn.to_kv.weight.data = torch.cat([torch.eye(2), torch.eye(2)])
    attn.to_out[0].weight.data = torch.eye(2)
    x = torch.tensor([[[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]])  # layer-normed: +-1 along one direction
    out = attn(x)
    w = torch.softmax(torch.tensor([8.0, 8.0, -8.0]), dim=0)
    expected = (w[:, None] * torch.tensor([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])).sum(0)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=1e-5)


def test_masked_keys_are_ignored_exactly():
    torch.manual_seed(1)
    tf = Transformer(dim=8, depth=2, dim_head=4, heads=2)
    x = torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, True, True, False, False]])
    full = tf(x, mask)[0, :4]
    alone = tf(x[:, :4])[0]
    torch.testing.assert_close(full, alone, atol=1e-6, rtol=1e-6)


def test_transformer_is_pre_norm_residual_without_final_norm():
    torch.manual_seed(2)
    tf = Transformer(dim=8, depth=1, dim_head=4, heads=2)
    x = torch.randn(1, 3, 8)
    attn, ff = tf.layers[0]
    h = attn(x) + x
    torch.testing.assert_close(tf(x), ff(h) + h)
    empty = torch.zeros(2, 0, 8)
    assert tf(empty) is empty


def test_sa_layer_parameter_count():
    layer = Transformer(768, 1)
    assert sum(p.numel() for p in layer.parameters()) == 6_293_120


@pytest.mark.parametrize("depth", [0, 3])
def test_depth(depth):
    assert len(Transformer(16, depth, dim_head=4, heads=2).layers) == depth


def test_conv_front_end_runs_channels_last_and_matches_nchw():
    """The MuQ conv subsampling keeps its weights in channels_last; NCHW gives the same output (1e-5)."""
    from cmirm_plugin.model.muq import Conv2dSubsampling

    torch.manual_seed(0)
    fast = Conv2dSubsampling(64, 48, 128).eval()
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    plain = Conv2dSubsampling(64, 48, 128).eval()
    plain.load_state_dict(fast.state_dict())
    plain.set_memory_format(torch.contiguous_format)
    mel = torch.randn(2, 128, 200)
    with torch.inference_mode():
        expected = plain(mel)
        assert plain.conv(mel.unsqueeze(1)).is_contiguous()                    # really NCHW
        assert fast.conv(mel.unsqueeze(1).contiguous(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last)
        got = fast(mel)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
