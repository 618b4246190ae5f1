"""The transformers ViT / DINOv2 encoder option (``--nerf.encoder.kind vit|dinov2``), offline and tiny.

Every backbone here is built from a config with a 32-wide, one-layer transformer, or from a folder
this test writes with ``save_pretrained``: nothing is downloaded, and any attempt to open a network
connection fails the test.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nerfdiff_ns.bundle import BundleError, load_bundle  # noqa: E402
from nerfdiff_ns.cli import EXIT_USER_ERROR, friendly_errors  # noqa: E402
from nerfdiff_ns.errors import FlagError  # noqa: E402
from nerfdiff_ns.nerf.encoder import EncoderConfig, TransformerEncoder, pretrained_folder  # noqa: E402
from nerfdiff_ns.nerf.image_nerf import ImageConditionedNeRF, NeRFConfig, SourceView  # noqa: E402
from nerfdiff_ns.nerf.rays import camera_rays, image_pixels  # noqa: E402

KINDS = ("vit", "dinov2")
TINY_FLAGS = ["--nerf.encoder.vit-hidden-size", "32", "--nerf.encoder.vit-layers", "1", "--nerf.encoder.vit-patch-size", "4"]
MODEL_CLASSES = {"vit": ("ViTConfig", "ViTModel"), "dinov2": ("Dinov2Config", "Dinov2Model")}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hub access: offline mode for huggingface_hub, and a socket that refuses to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def tiny_nerf_config(kind: str, **encoder: object) -> NeRFConfig:
    return NeRFConfig(image_size=16, triplane_channels=4, triplane_resolution=8, mlp_hidden=16, mlp_layers=2,
                      num_coarse_samples=8, num_fine_samples=4,
                      encoder=EncoderConfig(kind=kind, vit_hidden_size=32, vit_layers=1, vit_patch_size=4, **encoder))


def save_tiny_backbone(kind: str, folder: Path, seed: int = 7) -> dict[str, torch.Tensor]:
    """A transformers backbone written with ``save_pretrained`` (what a user copies over); returns its weights."""
    cfg_name, model_name = MODEL_CLASSES[kind]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_name)(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64)
    model = getattr(transformers, model_name)(cfg)
    model.save_pretrained(str(folder))
    return {k: v.clone() for k, v in model.state_dict().items()}


def render_probe(nerf: ImageConditionedNeRF, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplane of ``image`` and a deterministic 8x8 render from a camera 30 degrees off the input's."""
    size = image.shape[1]
    c2w = torch.eye(4)[None].clone()
    c2w[0, 2, 3] = -2.7  # OpenCV camera on -z looking at the origin
    angle = torch.tensor(torch.pi / 6)
    rot = torch.tensor([[angle.cos(), 0, angle.sin()], [0, 1, 0], [-angle.sin(), 0, angle.cos()]])
    target = c2w.clone()
    target[0, :3, :3] = rot
    target[0, :3, 3] = rot @ c2w[0, :3, 3]
    focal = (size / 2) / torch.tan(torch.deg2rad(torch.tensor(22.5)))
    count = image.shape[0]
    c2w, target = c2w.expand(count, 4, 4), target.expand(count, 4, 4)
    intrinsics = torch.tensor([[focal, focal, size / 2, size / 2]]).expand(count, 4)
    with torch.no_grad():
        triplane = nerf.encode(image)
        o, d = camera_rays(target, intrinsics, image_pixels(size, size, "cpu")[None].expand(count, -1, -1))
        rgb = nerf.render_rays(triplane, SourceView(c2w, intrinsics, (size, size)), o, d)["rgb"]
    return triplane, rgb


@pytest.mark.parametrize("kind", KINDS)
def test_builds_from_a_config_and_encodes_to_a_triplane(kind: str) -> None:
    nerf = ImageConditionedNeRF(tiny_nerf_config(kind))
    encoder = nerf.encoder.backbone
    assert isinstance(encoder, TransformerEncoder)
    assert isinstance(encoder.backbone, getattr(transformers, MODEL_CLASSES[kind][1]))
    assert (encoder.backbone.config.hidden_size, encoder.backbone.config.num_hidden_layers) == (32, 1)
    triplane, rgb = render_probe(nerf, torch.rand(2, 16, 16, 3))
    assert triplane.shape == (2, 3, 4, 8, 8) and torch.isfinite(triplane).all()
    assert rgb.shape == (2, 256, 3) and torch.isfinite(rgb).all()
    # input views of another size are resized to image_size first
    assert nerf.encode(torch.rand(1, 24, 24, 3)).shape == (1, 3, 4, 8, 8)


def make_trainer(tiny_data: Path, run: Path, kind: str, *flags: str):
    from nerfdiff_ns.pretrain import Trainer, parse_config

    cfg = parse_config(["--preset", "test", "--data", str(tiny_data), "--output-dir", str(run), "--steps", "1",
                        "--no-log-tensorboard", "--nerf.encoder.kind", kind, *TINY_FLAGS, *flags])
    return Trainer(cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_pretraining_step_trains_the_backbone_and_the_bundle_round_trips(kind: str, tiny_data: Path,
                                                                         tmp_path: Path) -> None:
    trainer = make_trainer(tiny_data, tmp_path / "run", kind)
    backbone = trainer.nerf.encoder.backbone.backbone
    assert isinstance(backbone, getattr(transformers, MODEL_CLASSES[kind][1]))
    before = {k: v.detach().clone() for k, v in trainer.nerf.encoder.named_parameters()}
    stats = trainer.train_step()
    assert stats is not None and all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    after = dict(trainer.nerf.encoder.named_parameters())
    changed = {k for k, v in before.items() if not torch.equal(v, after[k].detach())}
    patch = next(k for k in before if "patch_embeddings.projection.weight" in k)
    assert patch in changed  # the gradient reached the first layer of the transformer
    trainable = {k for k, v in after.items() if v.requires_grad}
    # every trainable parameter got a gradient (DDP refuses a step otherwise); the unused ones are frozen
    assert all(after[k].grad is not None for k in trainable), sorted(k for k in trainable if after[k].grad is None)
    assert trainable - changed <= {k for k in trainable if "bias" in k or "layernorm" in k.lower()}
    assert len(changed) >= 0.8 * len(trainable)

    bundle = load_bundle(trainer.export_bundle())
    stored = bundle.config.nerf.encoder
    assert stored.kind == kind and json.loads(stored.backbone_config)["model_type"] == kind
    loaded = bundle.load_nerf()
    image = torch.rand(1, 16, 16, 3)
    trainer.nerf.eval()
    for ours, theirs in zip(render_probe(trainer.nerf, image), render_probe(loaded.eval(), image)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_local_pretrained_weights_load_and_the_bundle_no_longer_needs_them(kind: str, tiny_data: Path,
                                                                            tmp_path: Path) -> None:
    folder = tmp_path / "backbone"
    saved = save_tiny_backbone(kind, folder)
    nerf = ImageConditionedNeRF(tiny_nerf_config(kind, pretrained_path=str(folder)))
    for key, value in nerf.encoder.backbone.backbone.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)

    trainer = make_trainer(tiny_data, tmp_path / "run", kind, "--nerf.encoder.pretrained-path", str(folder))
    assert torch.equal(trainer.nerf.encoder.backbone.backbone.embeddings.patch_embeddings.projection.weight,
                       saved["embeddings.patch_embeddings.projection.weight"])
    trainer.train_step()
    path = trainer.export_bundle()
    # --init-from the bundle with the same flags is accepted (the stored backbone config is not a setting)
    warm = make_trainer(tiny_data, tmp_path / "run2", kind, "--nerf.encoder.pretrained-path", str(folder),
                        "--init-from", str(path))
    for key, value in warm.nerf.state_dict().items():
        torch.testing.assert_close(value, trainer.nerf.state_dict()[key], rtol=0, atol=0)

    shutil.rmtree(folder)  # the bundle travels without the folder it started from
    loaded = load_bundle(path).load_nerf().eval()
    image = torch.rand(1, 16, 16, 3)
    for ours, theirs in zip(render_probe(trainer.nerf.eval(), image), render_probe(loaded, image)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert loaded.encoder.backbone.backbone.config.num_attention_heads == 2  # the saved model's, not vit_* defaults

    # a bundle that names the folder but not the backbone config (written before it was stored) fails clearly
    cfg_path = path / "config.json"
    data = json.loads(cfg_path.read_text())
    data["nerf"]["encoder"]["backbone_config"] = None
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=f"no such folder.*{folder.name}|{folder.name}.*no such folder"):
        load_bundle(path).load_nerf()


@pytest.mark.parametrize("kind", KINDS)
def test_missing_pretrained_weights_fail_with_a_clear_error(kind: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "not-here"
    with pytest.raises(FlagError, match=f"pretrained-path {missing}: no such folder.*save_pretrained"):
        ImageConditionedNeRF(tiny_nerf_config(kind, pretrained_path=str(missing)))
    # a user error: the CLIs print it as one paragraph, without a traceback (README's `--nerf.encoder.pretrained-path`)
    with pytest.raises(SystemExit) as info:
        friendly_errors(lambda: ImageConditionedNeRF(tiny_nerf_config(kind, pretrained_path=str(missing))), "nerfdiff-pretrain")
    assert info.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("nerfdiff-pretrain: error: --nerf.encoder.pretrained-path") and "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FlagError, match="config.json is missing"):
        pretrained_folder(str(empty), kind)

    no_weights = tmp_path / "config-only"
    save_tiny_backbone(kind, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FlagError, match="no weights.*model.safetensors"):
        ImageConditionedNeRF(tiny_nerf_config(kind, pretrained_path=str(no_weights)))

    other = "dinov2" if kind == "vit" else "vit"
    wrong_kind = tmp_path / "other"
    save_tiny_backbone(other, wrong_kind)
    with pytest.raises(ValueError, match=f"holds a '{other}' model but --nerf.encoder.kind is '{kind}'"):
        ImageConditionedNeRF(tiny_nerf_config(kind, pretrained_path=str(wrong_kind)))
