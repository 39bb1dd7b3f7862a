"""--init-from: DiT / Latte / a4g state dicts (real key names, tiny sizes) loaded through the key map.

The Latte round trip runs a small re-implementation of Latte's ``Latte.forward`` (models/latte.py,
``extras=2``, ``attention_mode="math"``) on the checkpoint tensors themselves and compares it with
the a4g model after loading: spatial and temporal blocks, temporal embedding, label table and
learned-variance head must all land where Latte uses them.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from published_refs import latte_temp_embed, mae_2d
from safetensors.torch import save_file

from a4g.errors import A4GError, WeightsError
from a4g.train.init_from import InitReport, detect_layout, load_init, read_weights
from a4g.train.model import VDiT

D, HEADS, C, P, LATENT, FRAMES = 32, 2, 4, 2, 8, 3
GRID = LATENT // P
F64 = torch.float64
BLOCK_PARTS = [
    f"{m}.{k}"
    for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
    for k in ("weight", "bias")
]


def vdit(depth: int = 4, classes: int = 5, learn_sigma: bool = True) -> VDiT:
    torch.manual_seed(0)
    return VDiT(
        input_size=LATENT,
        in_channels=C,
        num_frames=FRAMES,
        depth=depth,
        embed_dim=D,
        num_heads=HEADS,
        num_classes=classes,
        learn_sigma=learn_sigma,
    )


def dit_state_dict(
    depth: int, classes: int, learn_sigma: bool = True, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random float32 weights under DiT's ``models.py`` names (label table with its null row)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):  # non-zero everywhere, so every block acts (unlike adaLN-Zero init)
        return torch.randn(*shape, generator=g) * 0.2

    out = 2 * C if learn_sigma else C
    sd = {
        "pos_embed": torch.from_numpy(mae_2d(D, GRID, GRID)).float()[None],  # as DiT: numpy → .float()
        "x_embedder.proj.weight": r(D, C, P, P),
        "x_embedder.proj.bias": r(D),
        "t_embedder.mlp.0.weight": r(D, 256) * 0.25,
        "t_embedder.mlp.0.bias": r(D),
        "t_embedder.mlp.2.weight": r(D, D),
        "t_embedder.mlp.2.bias": r(D),
        "y_embedder.embedding_table.weight": r(classes + 1, D),
        "final_layer.linear.weight": r(P * P * out, D),
        "final_layer.linear.bias": r(P * P * out),
        "final_layer.adaLN_modulation.1.weight": r(2 * D, D),
        "final_layer.adaLN_modulation.1.bias": r(2 * D),
    }
    shapes = {"attn.qkv": (3 * D, D), "attn.proj": (D, D), "mlp.fc1": (4 * D, D), "mlp.fc2": (D, 4 * D)}
    shapes["adaLN_modulation.1"] = (6 * D, D)
    for i in range(depth):
        for module, shape in shapes.items():
            sd[f"blocks.{i}.{module}.weight"] = r(*shape)
            sd[f"blocks.{i}.{module}.bias"] = r(shape[0])
    return sd


def latte_state_dict(depth: int = 4, classes: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Latte's names are DiT's plus the fixed ``temp_embed`` [1, F, D]; its ``blocks`` alternate S, T."""
    sd = dit_state_dict(depth, classes, seed=seed)
    sd["temp_embed"] = torch.from_numpy(latte_temp_embed(D, FRAMES)).float()[None]
    return sd


# ---------------------------------------------------------------- Latte's forward, written out


def _lin(x, w, p):
    return F.linear(x, w[p + ".weight"], w[p + ".bias"])


def _modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _latte_block(w, p, x, c):
    """Latte ``TransformerBlock``: adaLN-Zero, timm Attention ("math" mode) and tanh-GELU Mlp."""
    shift1, scale1, gate1, shift2, scale2, gate2 = _lin(F.silu(c), w, p + "adaLN_modulation.1").chunk(
        6, dim=1
    )
    h = _modulate(F.layer_norm(x, (D,), eps=1e-6), shift1, scale1)
    b, n, d = h.shape
    q, k, v = _lin(h, w, p + "attn.qkv").reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q @ k.transpose(-2, -1)) * (d // HEADS) ** -0.5).softmax(dim=-1)
    x = x + gate1.unsqueeze(1) * _lin((attn @ v).transpose(1, 2).reshape(b, n, d), w, p + "attn.proj")
    h = _modulate(F.layer_norm(x, (D,), eps=1e-6), shift2, scale2)
    return x + gate2.unsqueeze(1) * _lin(
        F.gelu(_lin(h, w, p + "mlp.fc1"), approximate="tanh"), w, p + "mlp.fc2"
    )


def latte_forward(sd, x, t, y):
    """Latte.forward in float64 on the state dict's own tensors: ``[B, F, C, H, W]`` → ``[B, F, C_out, H, W]``."""
    w = {k: v.to(F64) for k, v in sd.items()}
    depth = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    b, f = x.shape[:2]
    tok = F.conv2d(x.flatten(0, 1), w["x_embedder.proj.weight"], w["x_embedder.proj.bias"], stride=P)
    tok = tok.flatten(2).transpose(1, 2) + w["pos_embed"]  # timm PatchEmbed, then + pos_embed
    n = tok.shape[1]
    freqs = torch.exp(
        -math.log(10000) * torch.arange(128, dtype=torch.float32) / 128
    )  # DiT's float32 features
    args = t[:, None].float() * freqs[None]
    temb = _lin(
        F.silu(_lin(torch.cat([args.cos(), args.sin()], -1).to(F64), w, "t_embedder.mlp.0")),
        w,
        "t_embedder.mlp.2",
    )
    cond = temb + w["y_embedder.embedding_table.weight"][y]
    c_spatial, c_temp = cond.repeat_interleave(f, 0), cond.repeat_interleave(n, 0)  # "n d -> (n c) d"
    for i in range(0, depth, 2):
        tok = _latte_block(w, f"blocks.{i}.", tok, c_spatial)
        tok = tok.reshape(b, f, n, D).transpose(1, 2).reshape(b * n, f, D)  # "(b f) t d -> (b t) f d"
        if i == 0:
            tok = tok + w["temp_embed"]
        tok = _latte_block(w, f"blocks.{i + 1}.", tok, c_temp)
        tok = tok.reshape(b, n, f, D).transpose(1, 2).reshape(b * f, n, D)  # "(b t) f d -> (b f) t d"
    shift, scale = _lin(F.silu(c_spatial), w, "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    out = _lin(_modulate(F.layer_norm(tok, (D,), eps=1e-6), shift, scale), w, "final_layer.linear")
    co = out.shape[-1] // (P * P)
    out = torch.einsum("nhwpqc->nchpwq", out.reshape(b * f, GRID, GRID, P, P, co))
    return out.reshape(b, f, co, GRID * P, GRID * P)


# ---------------------------------------------------------------- Latte


def test_latte_round_trip_gives_lattes_output():
    """Same output as Latte's own forward on the same tensors.

    Both sides run in float64 from the same float32 weights; the only independently computed values
    are the fixed sin-cos tables (torch here, numpy in the checkpoint), which may differ by one float32
    ulp (6e-8) after rounding. Through two block pairs with O(1) gains that stays below 1e-6, while
    any misplaced tensor (transposed position channels, swapped spatial/temporal block, wrong label
    row or head layout) changes the output by O(0.1).
    """
    sd = latte_state_dict()
    model = vdit()
    report = load_init(model, sd)
    x = torch.randn(2, FRAMES, C, LATENT, LATENT, generator=torch.Generator().manual_seed(1), dtype=F64)
    t, y = torch.tensor([3.0, 640.0]), torch.tensor([4, 1])
    ours = model.double().eval()(x, t, y)[0]
    ref = latte_forward(sd, x, t, y)
    assert ours.shape == ref.shape == (2, FRAMES, 2 * C, LATENT, LATENT)
    assert ref.abs().mean() > 0.1  # a forward that really computes something
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert report.layout == "latte" and report.new == []
    assert sorted(report.loaded) == sorted(model.state_dict())
    assert [k for k, _ in report.skipped] == ["pos_embed", "temp_embed"]
    assert all("equals" in why for _, why in report.skipped)


def test_latte_round_trip_fails_with_swapped_blocks():
    """The round trip can fail: a spatial/temporal swap is visible in the output."""
    sd = latte_state_dict()
    swapped = dict(sd)
    for part in BLOCK_PARTS:
        swapped[f"blocks.0.{part}"], swapped[f"blocks.1.{part}"] = (
            sd[f"blocks.1.{part}"],
            sd[f"blocks.0.{part}"],
        )
    model = vdit()
    load_init(model, swapped)
    x = torch.randn(1, FRAMES, C, LATENT, LATENT, generator=torch.Generator().manual_seed(1), dtype=F64)
    t, y = torch.tensor([300.0]), torch.tensor([2])
    assert (model.double().eval()(x, t, y)[0] - latte_forward(sd, x, t, y)).abs().max() > 1e-2


def test_old_latte_time_embed_name_and_t2v_refusal():
    sd = latte_state_dict()
    sd["time_embed"] = sd.pop("temp_embed")  # name in early Latte checkpoints (Latte's trans_weight.py)
    assert detect_layout(list(sd)) == "latte"
    with pytest.raises(WeightsError, match="text-to-video"):
        load_init(vdit(), {"transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 2)})
    with pytest.raises(WeightsError, match="cannot tell the layout"):
        load_init(vdit(), {"encoder.conv.weight": torch.zeros(2, 2)})


# ---------------------------------------------------------------- DiT


def test_dit_blocks_go_to_spatial_blocks_and_mismatches_are_reported():
    """DiT-style: 6 blocks, 10 classes, learn_sigma → a4g with 2 spatial blocks, 5 classes, no sigma."""
    sd = dit_state_dict(depth=6, classes=10, learn_sigma=True)
    model = vdit(depth=4, classes=5, learn_sigma=False)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_init(model, sd, layout="auto")
    assert report.layout == "dit"
    blocks_from = {0: 0, 1: 2}  # DiT block → a4g block
    expected_loaded = {f"blocks.{b}.{part}" for b in blocks_from.values() for part in BLOCK_PARTS}
    expected_loaded |= {"patch_embed.weight", "patch_embed.bias", "final_layer.adaLN_modulation.1.weight"}
    expected_loaded |= {"final_layer.adaLN_modulation.1.bias"}
    expected_loaded |= {f"t_embedder.mlp.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    assert set(report.loaded) == expected_loaded
    assert set(report.new) == set(model.state_dict()) - expected_loaded
    assert {"blocks.1.attn.qkv.weight", "blocks.3.mlp.fc2.bias", "y_embedder.table.weight"} <= set(report.new)
    reasons = dict(report.skipped)
    assert "class count" in reasons["y_embedder.embedding_table.weight"]
    assert "8 vs 4 output channels" in reasons["final_layer.linear.weight"]
    assert "2 spatial blocks" in reasons["blocks.2.attn.qkv.weight"]
    assert "equals" in reasons["pos_embed"]
    assert len(report.skipped) == 1 + 1 + 2 + 4 * len(BLOCK_PARTS)  # pos, table, head, DiT blocks 2-5
    state = model.state_dict()
    for dit_block, ours in blocks_from.items():
        for part in BLOCK_PARTS:
            assert torch.equal(state[f"blocks.{ours}.{part}"], sd[f"blocks.{dit_block}.{part}"])
    for key in report.new:  # temporal blocks, class table and head keep their fresh (adaLN-Zero) init
        assert torch.equal(state[key], fresh[key])
    assert torch.equal(state["patch_embed.weight"], sd["x_embedder.proj.weight"])


def test_dit_by_index_is_lattes_name_match():
    sd = dit_state_dict(depth=6, classes=5)
    model = vdit(depth=4, classes=5)
    report = load_init(model, sd, layout="dit", dit_blocks="by_index")
    for i in range(4):
        assert torch.equal(
            model.state_dict()[f"blocks.{i}.attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.weight"]
        )
    assert "4 blocks" in dict(report.skipped)["blocks.4.attn.qkv.weight"]
    assert report.new == []


def test_pos_embed_in_another_channel_order_is_flagged():
    sd = dit_state_dict(depth=2, classes=5)
    pos = sd["pos_embed"]
    sd["pos_embed"] = torch.cat([pos[..., D // 2 :], pos[..., : D // 2]], dim=-1)  # rows first
    report = load_init(vdit(), sd)
    assert "differs from a4g's" in dict(report.skipped)["pos_embed"]


def test_unconditional_model_reports_the_class_table():
    report = load_init(vdit(classes=0), latte_state_dict())
    assert "no y_embedder.table.weight" in dict(report.skipped)["y_embedder.embedding_table.weight"]


# ---------------------------------------------------------------- files and safety


def test_nested_pt_checkpoint_prefers_ema_and_strips_ddp_prefix(tmp_path):
    """DiT's train.py saves {"model", "ema", "opt", "args"}; args is an argparse.Namespace."""
    ema, live = latte_state_dict(seed=0), latte_state_dict(seed=1)
    path = tmp_path / "0100000.pt"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in live.items()},
            "ema": ema,
            "args": argparse.Namespace(lr=1e-4),
        },
        path,
    )
    model = vdit()
    report = load_init(model, path)
    assert report.layout == "latte" and report.new == []
    assert torch.equal(model.state_dict()["blocks.1.mlp.fc1.weight"], ema["blocks.1.mlp.fc1.weight"])
    torch.save({"model": {f"module.{k}": v for k, v in live.items()}}, path)
    load_init(model, path)
    assert torch.equal(model.state_dict()["blocks.1.mlp.fc1.weight"], live["blocks.1.mlp.fc1.weight"])


def test_safetensors_and_a4g_checkpoint_directory(tmp_path):
    source = vdit()
    for p in source.parameters():
        p.data.normal_(0, 0.1)  # not the seeded init, so a load is visible
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    ckpt = tmp_path / "step_0000100"
    ckpt.mkdir()
    trainee = {f"model.{k}": v for k, v in source.state_dict().items()} | {
        "projector.0.weight": torch.zeros(3, D)
    }
    save_file(source.state_dict(), str(ckpt / "ema.safetensors"))
    save_file(trainee, str(tmp_path / "model.safetensors"))
    x = torch.randn(1, 2, C, LATENT, LATENT)
    expected = source.eval()(x, torch.tensor([5.0]), torch.tensor([1]))[0]
    for where in (tmp_path / "weights.safetensors", ckpt, tmp_path / "model.safetensors"):
        model = vdit()
        report = load_init(model, where)
        assert report.layout == "a4g" and report.new == []
        torch.testing.assert_close(
            model.eval()(x, torch.tensor([5.0]), torch.tensor([1]))[0], expected, rtol=0, atol=0
        )
    assert dict(report.skipped) == {
        "projector.0.weight": "alignment projector of an a4g run, not part of the V-DiT"
    }


CALLS: list[str] = []


def _record(tag: str) -> str:
    CALLS.append(tag)
    return tag


class Payload:
    """Unpickling this calls ``_record``: a stand-in for code a malicious checkpoint would run."""

    def __reduce__(self):
        return (_record, ("ran",))


def test_pickled_code_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"ema": latte_state_dict(), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="refused.*_record") as err:
        load_init(vdit(), path)
    assert isinstance(err.value, A4GError) and CALLS == []


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [("junk.pt", b"not a checkpoint", "not a readable"), ("junk.safetensors", b"\x00\x01", "safetensors")],
)
def test_unreadable_files_are_weights_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        read_weights(tmp_path / name)
    with pytest.raises(WeightsError, match="no such file"):
        read_weights(tmp_path / "missing.pt")


def test_report_summary_and_bad_layout():
    report = InitReport(loaded=["a", "b"], skipped=[("c", "why")], new=["d"], layout="dit")
    assert report.summary() == "init from dit: 2 tensors loaded, 1 skipped, 1 newly initialized"
    with pytest.raises(WeightsError, match="layout"):
        load_init(vdit(), {}, layout="sd3")
