"""`lt-ray predict`: top-k of image files and the re-evaluation of a split, for a plain (CE)
and a multi-output (GML) checkpoint; every bad input is one `error:` line and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import tiny_overrides
from lt_ray import predict as P
from lt_ray.cli import main
from lt_ray.data import build_dataset
from lt_ray.engine import predict_split
from lt_ray.metrics import parse_metric_name

# TINY, a little easier (imbalance 4, lr 0.05, 4 epochs): a model whose classes differ
LEARN = ["--set", "data.imb_factor=4", "--set", "optim.lr=0.05", "--set", "train.epochs=4"]
GML = ["--method", "gml", "--set", "train.epochs=3", "--set", "method.args.ensemble=prob",
       "--set", "method.args.t1=2.0", "--set", "pretrained.method.name=ce",
       "--set", "pretrained.train.epochs=4", "--set", "pretrained.optim.lr=0.05",
       "--set", "pretrained.train.batch_size=32", "--set", "pretrained.train.precision=fp32"]
IMAGES_PER_CLASS = 2


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A CE and a GML run (its stage artifact deleted afterwards), and PNG images of the test
    split: ``<class>_<i>.png`` with their split positions in ``positions.json``."""
    root = tmp_path_factory.mktemp("predict")
    res = invoke("train", *tiny_overrides(), *LEARN, "--out", root / "ce")
    assert res.exit_code == 0, res.output
    res = invoke("train", *tiny_overrides(), *LEARN, *GML, "--artifacts", root / "art",
                 "--out", root / "gml")
    assert res.exit_code == 0, res.output
    shutil.rmtree(root / "art")  # predict needs only the GML checkpoint, not its base
    trained = P.load_trained(root / "ce" / "checkpoint.pt")
    data = build_dataset(trained.cfg.data)
    images = root / "images"
    images.mkdir()
    positions = {}
    for c in range(data.num_classes):
        where = torch.nonzero(data.test.y == c).flatten()[:IMAGES_PER_CLASS].tolist()
        for i, pos in enumerate(where):
            path = images / f"{c}_{i}.png"
            Image.fromarray(data.test.x[pos].permute(1, 2, 0).numpy()).save(path)
            positions[str(path)] = pos
    (root / "positions.json").write_text(json.dumps(positions))
    big = Image.fromarray(data.test.x[0].permute(1, 2, 0).numpy()).resize((20, 13))
    big.convert("L").save(images / "other_size_grey.jpg")  # another size, mode and format
    return {"root": root, "ce": root / "ce", "gml": root / "gml", "images": images}


def pngs(runs: dict[str, Path]) -> list[str]:
    return sorted(str(p) for p in runs["images"].glob("*.png"))


def by_hand(paths: list[str], spec: P.InputSpec) -> torch.Tensor:
    """The training normalisation written out: resize, x/255, (x - mean) / std."""
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB").resize((spec.size, spec.size),
                                                     Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append((x - torch.tensor(spec.mean).view(3, 1, 1)) / torch.tensor(spec.std).view(
            3, 1, 1))
    return torch.stack(out)


def check_top_k(top: list[dict], k: int, num_classes: int) -> None:
    assert len(top) == min(k, num_classes)
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert len({t["index"] for t in top}) == len(top)
    assert all(t["class"] == f"class_{t['index']}" for t in top)


@pytest.mark.parametrize("kind", ["ce", "gml"])
def test_top_k_matches_the_model_on_the_normalised_images(runs, kind):
    paths = [*pngs(runs), str(runs["images"] / "other_size_grey.jpg")]
    res = invoke("predict", "--checkpoint", runs[kind] / "checkpoint.pt", *paths,
                 "--top-k", 3, "--json")
    assert res.exit_code == 0, res.output
    docs = json.loads(res.output)
    assert [d["image"] for d in docs] == paths
    trained = P.load_trained(runs[kind])  # the run folder works too
    spec = P.input_spec(trained.cfg)
    assert spec.size == 8  # data.synthetic.image_size, not CIFAR's 32
    u8 = P.read_images(paths, spec.size)
    assert u8.shape == (len(paths), 3, 8, 8) and u8.dtype == torch.uint8
    x = P.normalise(u8, spec)
    assert torch.allclose(x, by_hand(paths, spec), atol=1e-5)
    with torch.no_grad():
        out = trained.method.predict(x)
    named = out if isinstance(out, dict) else {}
    logits = out[trained.primary_output] if named else out
    for i, doc in enumerate(docs):
        check_top_k(doc["top_k"], 3, 4)
        assert doc["top_k"][0]["index"] == int(logits[i].argmax())
        assert doc["top_k"][0]["probability"] == pytest.approx(
            float(torch.softmax(logits[i], 0).max()), abs=1e-6)
        if kind == "gml":
            assert doc["output"] == "ens" and set(doc["outputs"]) == {"old", "new", "ens"}
            assert doc["outputs"]["ens"] == doc["top_k"]
            for name, top in doc["outputs"].items():
                check_top_k(top, 3, 4)
                assert top[0]["index"] == int(named[name][i].argmax())
        else:
            assert "outputs" not in doc
    # the PNGs of the test split get the engine's own evaluation predictions
    data = build_dataset(trained.cfg.data)
    engine = predict_split(trained.method, "test", data, trained.cfg.train,
                           torch.device("cpu"), None)[None]
    positions = json.loads((runs["root"] / "positions.json").read_text())
    assert [d["top_k"][0]["index"] for d in docs[:-1]] == [
        int(engine[positions[p]]) for p in paths[:-1]]
    assert len({d["top_k"][0]["index"] for d in docs[:-1]}) > 1  # not a constant model


def test_text_table_and_top_k_above_the_class_count(runs):
    paths = pngs(runs)[:2]
    res = invoke("predict", "--checkpoint", runs["gml"], *paths, "--top-k", 10)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("output: ens")
    assert lines[1] == paths[0] and lines[2].lstrip().startswith("1  class_")
    assert sum(line.rstrip().endswith("%") and "output" not in line for line in lines) == 8
    assert "top-1 by output: old class_" in res.output


@pytest.mark.parametrize("kind", ["ce", "gml"])
def test_split_metrics_equal_the_recorded_ones(runs, kind):
    recorded = json.loads((runs[kind] / "metrics.json").read_text())
    expected = {k: v for k, v in recorded.items()
                if (parsed := parse_metric_name(k)) is not None and parsed[0] == "test"}
    res = invoke("predict", "--checkpoint", runs[kind] / "checkpoint.pt", "--split", "test",
                 "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["metrics"] == expected
    if kind == "gml":
        assert {"test_hm_old", "test_hm_new", "test_hm_ens"} <= set(doc["metrics"])
        assert doc["metrics"]["test_acc"] == doc["metrics"]["test_acc_ens"]
    assert doc["per_class_recall"]["test"] == recorded["per_class_recall"]["test"]
    assert 0 < doc["metrics"]["test_acc"] < 1  # a real model, not all right or all wrong
    text = invoke("predict", "--checkpoint", runs[kind], "--split", "test")
    assert text.exit_code == 0, text.output
    rows = {line.split()[0]: line.split()[1:] for line in text.output.splitlines()[2:]}
    primary = "ens*" if kind == "gml" else "model"
    assert float(rows[primary][0]) == pytest.approx(100 * recorded["test_acc"], abs=0.01)
    if kind == "gml":
        assert float(rows["old"][0]) == pytest.approx(100 * recorded["test_acc_old"], abs=0.01)


def bad_checkpoints(folder: Path) -> dict[str, Path]:
    files = {}
    ce = torch.load(folder / "ce" / "checkpoint.pt", weights_only=True)
    files["bare"] = folder / "bare.pt"
    torch.save(ce["state_dict"], files["bare"])
    files["tensor"] = folder / "tensor.pt"
    torch.save(torch.zeros(3), files["tensor"])
    files["other"] = folder / "other.pt"
    torch.save({"epoch": 3, "name": "x"}, files["other"])
    files["corrupt"] = folder / "corrupt.pt"
    files["corrupt"].write_bytes((folder / "ce" / "checkpoint.pt").read_bytes()[:2000])
    files["missing"] = folder / "nowhere" / "checkpoint.pt"
    return files


@pytest.mark.parametrize(
    "case, message",
    [
        ("bare", "is not an lt-ray checkpoint (it holds a bare state dict)"),
        ("tensor", "holds a Tensor, not a dict"),
        ("other", "holds no state dict of tensors"),
        ("corrupt", "cannot read checkpoint"),
        ("missing", "checkpoint not found"),
    ],
)
def test_a_checkpoint_that_is_not_lt_rays_is_refused(runs, case, message):
    path = bad_checkpoints(runs["root"])[case]
    res = invoke("predict", "--checkpoint", path, pngs(runs)[0])
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [res.output.strip()]  # one line
    assert res.output.startswith("error: ") and message in res.output
    assert str(path) in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["{img}", "--split", "test"], "not both"),
        ([], "give IMAGE files or --split"),
        (["{img}", "--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--split", "train"], "--split 'train' is not one of val, test, fulltest"),
        (["{bad}"], "not a readable image"),
        (["{img}", "{missing}"], "no such file"),
        (["{folder}"], "not a readable image"),
        (["--split", "test", "--device", "gpu"], "--device 'gpu' is not a device"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(runs, args, message):
    bad = runs["root"] / "not_an_image.png"
    bad.write_text("hello")
    names = {"img": pngs(runs)[0], "bad": str(bad), "missing": str(runs["root"] / "gone.png"),
             "folder": str(runs["images"])}
    args = [a.format(**names) for a in args]
    res = invoke("predict", "--checkpoint", runs["ce"], *args)
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [res.output.strip()]
    assert res.output.startswith("error: ") and message in res.output
    if message in ("not a readable image", "no such file"):
        assert f"image {args[-1]}:" in res.output  # names the file


def test_cifar_input_is_32_pixels_with_the_cifar_statistics_without_reading_data(tmp_path):
    from lt_ray.config import ExperimentConfig
    from lt_ray.data.cifar import CIFAR_MEAN, CIFAR_STD

    for dataset in ("cifar10", "cifar100"):
        cfg = ExperimentConfig.from_dict({"data": {"dataset": dataset,
                                                   "root": str(tmp_path / "none")}})
        assert P.input_spec(cfg) == P.InputSpec(32, CIFAR_MEAN, CIFAR_STD)


CRAFTED_PICKLE = b"cos\nsystem\n(S'echo crafted'\ntR."  # a GLOBAL os.system call, never run


def test_a_crafted_pickle_is_refused_without_warnings_or_unsafe_advice(runs, tmp_path):
    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(CRAFTED_PICKLE)
    res = invoke("predict", "--checkpoint", str(crafted), pngs(runs)[0])
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [res.output.strip()]  # no torch warning before it
    assert "cannot read checkpoint" in res.output and "never unpickles" in res.output
    assert "weights_only" not in res.output


def test_a_refused_resume_writes_nothing(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["ce"], out)
    (out / "checkpoint.pt").write_bytes(CRAFTED_PICKLE)
    (out / "config.yaml").unlink()
    before = sorted(p.name for p in out.iterdir())
    res = invoke("train", *tiny_overrides(), "--out", str(out), "--resume")
    assert res.exit_code == 2 and "cannot read checkpoint" in res.output, res.output
    assert res.output.splitlines() == [res.output.strip()]  # refused before the data is read
    assert sorted(p.name for p in out.iterdir()) == before  # no config.yaml written


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk only: the header of a huge image, no pixels."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF))


def test_a_decompression_bomb_header_is_one_error_line(runs, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(10000, 10000))
    res = invoke("predict", "--checkpoint", str(runs["ce"]), str(bomb))
    assert res.exit_code == 2, res.output
    assert res.output.splitlines() == [res.output.strip()]
    assert f"image {bomb}: not a readable image" in res.output
