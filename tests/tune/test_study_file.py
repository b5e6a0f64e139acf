"""What study.json declares for a reader (no Ray): each cell's label as trials.parquet names
it, the comparison-table row of each output, the output the search selects on, and the stage
artifacts of the search seed and every repeat seed; a resumed study refreshes them."""

from __future__ import annotations

import json

from conftest import TINY
from lt_ray.methods import FAMILIES
from lt_ray.tune.parse import parse_spec
from lt_ray.tune.study_folder import declarations, refresh_declarations, write_study_file


def spec():
    return parse_spec({
        "name": "decl",
        "base": {**TINY, "method": {"name": "gml"}, "pretrained": {"method": {"name": "ce"}}},
        "grid": {"pretrained.method.name": ["ce", "mislas"],
                 "method.args.ensemble": ["none", "prob"]},
        "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
        "search": {"metric": "val_hm", "mode": "max", "num_samples": 2},
        "repeat": {"seeds": [5]},
    })


def test_cells_declare_label_rows_primary_output_and_stages_per_seed():
    study = spec()
    found = declarations(study, "/store/artifacts")
    assert found["families"] == list(FAMILIES) and found["artifacts"] == "/store/artifacts"
    cells = found["cells"]
    assert [c["label"] for c in cells][:2] == [
        "pretrained.method.name=ce,method.args.ensemble=none",
        "pretrained.method.name=ce,method.args.ensemble=prob"]
    assert cells[1]["rows"]["ens"] == {"name": "CE + GML (ensemble)", "family": FAMILIES[2]}
    assert [c["primary"] for c in cells] == ["new", "ens", "new", "ens"]
    mislas = cells[2]["stages"]
    assert [(s["seed"], s["method"]) for s in mislas] == [
        (0, "mislas"), (0, "mislas_stage1"), (5, "mislas"), (5, "mislas_stage1")]
    seed5 = study.resolve_cell(study.cells()[2], {"seed": 5}).stage
    assert mislas[2]["hash"] == seed5.hash and mislas[3]["hash"] == seed5.stage.hash
    assert mislas[0]["title"] == "MiSLAS" and mislas[1]["title"] == "MiSLAS stage 1 (mixup)"
    stage = study.resolve_cell(study.cells()[0]).stage
    assert cells[0]["stages"] == [{"seed": 0, "hash": stage.hash, "method": "ce",
                                   "title": "CE", "epochs": stage.config.train.epochs},
                                  {"seed": 5, "hash": cells[0]["stages"][1]["hash"],
                                   "method": "ce", "title": "CE",
                                   "epochs": stage.config.train.epochs}]


def test_a_resumed_study_refreshes_its_declarations_and_keeps_the_rest(tmp_path):
    study = spec()
    write_study_file(str(tmp_path), study, {"git_sha": "abc"}, "/a")
    saved = json.loads((tmp_path / "study.json").read_text())
    for cell in saved["cells"]:  # as an earlier lt-ray wrote it
        del cell["rows"], cell["stages"]
    saved.pop("families")
    (tmp_path / "study.json").write_text(json.dumps(saved))
    refresh_declarations(str(tmp_path), study, "/b")
    again = json.loads((tmp_path / "study.json").read_text())
    assert again["provenance"] == {"git_sha": "abc"} and again["spec"] == saved["spec"]
    assert again["artifacts"] == "/b" and again["families"] == list(FAMILIES)
    assert all(c["rows"] and c["stages"] for c in again["cells"])
