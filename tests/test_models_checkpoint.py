import io

import pytest
import torch

from lt_ray.checkpoint import (
    atomic_save,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_object,
)
from lt_ray.errors import CheckpointError, ConfigError
from lt_ray.models import MODELS, NormedLinear, build_model


@pytest.mark.parametrize(
    "arch, blocks", [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9)]
)
def test_resnet_depths_and_shapes(arch, blocks):
    model = build_model(arch, 10)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == blocks
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 64)
    assert model(x).shape == (2, 10)


def test_resnet32_has_the_reference_parameter_count():
    n = sum(p.numel() for p in build_model("resnet32", 10).parameters())
    assert 460_000 < n < 470_000  # ~0.46M (METHODS.md §2)


def test_option_a_shortcut_has_no_parameters_and_pads_channels():
    block = build_model("resnet20", 10).layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    out = block.shortcut(torch.ones(1, 16, 8, 8))
    assert out.shape == (1, 32, 4, 4)
    assert out[0, :8].abs().sum() == 0 and out[0, 8:24].min() == 1 and out[0, 24:].abs().sum() == 0


def test_normed_head_outputs_cosines():
    head = NormedLinear(64, 5)
    assert torch.allclose(head.weight.norm(dim=0), torch.ones(5), atol=1e-4)
    f = torch.randn(7, 64)
    cos = head(f)
    assert cos.abs().max() <= 1 + 1e-6
    assert torch.allclose(cos, head(3 * f), atol=1e-6)  # invariant to the feature norm


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean resnet32"):
        MODELS.get("resnet33")


def test_checkpoint_round_trip(tmp_path):
    model = build_model("resnet20", 10)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, config={"a": 1}, class_counts=[5, 3], state_dict=model.state_dict())
    ck = load_checkpoint(path)
    assert ck["config"] == {"a": 1} and ck["class_counts"] == [5, 3]
    other = build_model("resnet20", 10)
    load_weights(other, ck["state_dict"], source=str(path))
    x = torch.randn(2, 3, 32, 32)
    model.eval(), other.eval()
    assert torch.equal(model(x), other(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_foreign_checkpoint_with_module_prefix_and_linear_head_is_mapped(tmp_path):
    model = build_model("resnet32", 10)
    foreign = {"module." + k.replace("head.", "linear."): v for k, v in model.state_dict().items()}
    path = tmp_path / "ldam.pth"
    torch.save({"state_dict": foreign, "epoch": 3}, path)
    ck = load_checkpoint(path)
    fresh = build_model("resnet32", 10)
    load_weights(fresh, ck["state_dict"], source=str(path))
    assert torch.equal(fresh.head.weight, model.head.weight)


def test_mismatched_class_count_is_explained(tmp_path):
    state = build_model("resnet32", 100).state_dict()
    with pytest.raises(CheckpointError, match="class count or head type differs"):
        load_weights(build_model("resnet32", 10), state, source="x.pt")


def test_mismatched_architecture_is_explained():
    state = build_model("resnet56", 10).state_dict()
    with pytest.raises(CheckpointError, match="unexpected weights"):
        load_weights(build_model("resnet32", 10), state, source="x.pt")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class StopsOnThirdWrite(io.BytesIO):
    """A file that receives a signal (KeyboardInterrupt) in the middle of torch.save."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, b):
        self.writes += 1
        if self.writes == 3:
            raise KeyboardInterrupt
        return super().write(b)


def test_a_signal_during_a_save_ends_in_the_signal_not_in_torchs_writer_error():
    obj = {"w": torch.randn(100, 100)}
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch alone reports
        torch.save(obj, StopsOnThirdWrite())
    with pytest.raises(KeyboardInterrupt):
        save_object(obj, StopsOnThirdWrite())
    buffer = io.BytesIO()
    save_object(obj, buffer)  # an uninterrupted save is torch.save's
    assert torch.equal(torch.load(io.BytesIO(buffer.getvalue()))["w"], obj["w"])


def test_an_interrupted_atomic_save_keeps_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1}, path)
    real_save = torch.save

    def save_then_stop(obj, f, *args, **kwargs):
        stopping = StopsOnThirdWrite()
        real_save({"w": torch.randn(100, 100)}, stopping, *args, **kwargs)
        f.write(stopping.getvalue())

    monkeypatch.setattr(torch, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    assert torch.load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
