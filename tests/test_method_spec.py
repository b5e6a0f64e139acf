"""MethodSpec: a method's typed record; a wrong field fails at import, not at run time."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from lt_ray.config import ExperimentConfig
from lt_ray.methods import (
    FAMILIES,
    METHODS,
    MethodSpec,
    Output,
    Recipe,
    Stage,
    outputs_declaration,
)
from lt_ray.methods.standard import build_standard
from lt_ray.resolution import resolve

ANALYSIS = Path(__file__).resolve().parents[1] / "lt_ray" / "analysis"


def test_an_unknown_field_is_an_error_at_construction():
    with pytest.raises(TypeError, match="needs_base"):
        MethodSpec(name="x", build=build_standard, doc="x", recipe=Recipe(loss="ce"),
                   needs_base=True)  # the old **meta key: now spec.stage


@pytest.mark.parametrize(("fields", "message"), [
    ({"recipe": Recipe(loss="cee")}, "unknown loss 'cee'"),
    ({"recipe": Recipe(loss="ce", head="cosine")}, "unknown head 'cosine'"),
    ({"recipe": Recipe(loss="ce"), "defaults": {"method": {"loss": "ce"}}}, "belong in recipe="),
    ({"recipe": Recipe(loss="ce"), "defaults": {"optim": {"lrr": 0.1}}}, "defaults.optim.lrr"),
    ({"args": dict}, "args must be a dataclass"),
    ({"outputs": (Output(name="a", label="a", meaning="a"),)}, "primary_output"),
])
def test_a_malformed_spec_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        MethodSpec(name="x", build=build_standard, doc="x", **fields)


def test_every_registered_spec_is_consistent():
    for name in METHODS.names():
        spec = METHODS.get(name)
        assert spec.name == name and spec.doc
        assert spec.own_loss == (spec.recipe is None)
        assert spec.needs_base == (spec.stage is not None)
        assert dataclasses.is_dataclass(spec.args)
        default_stage = spec.defaults.get("pretrained")
        assert default_stage is None or spec.needs_base, name  # only a stage 2 has a stage
        if spec.outputs:
            assert spec.primary_output(spec.args()) in {o.name for o in spec.outputs}


def test_outputs_declaration_is_what_a_study_stores():
    declared = outputs_declaration(["ce", "gml", "ride_ea", "gml"])
    assert list(declared) == ["gml", "ride_ea"]  # single-output methods declare nothing
    assert [o["name"] for o in declared["gml"]] == ["old", "new", "ens"]
    assert declared["ride_ea"][0] == {"name": "routed", "label": "routed experts",
                                      "meaning": declared["ride_ea"][0]["meaning"],
                                      "row": "{base} + {method}", "family": "base"}
    assert all(o["meaning"] for outputs in declared.values() for o in outputs)


def test_the_analysis_names_no_method_and_no_output():
    """Outputs are declared and stored with the study: no method or output name is written
    into lt_ray/analysis (as a string of its code)."""
    names = set(METHODS.names())
    names |= {o.name for n in METHODS.names() for o in METHODS.get(n).outputs}
    found = []
    for path in ANALYSIS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value in names):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found


def test_a_stage_check_and_hint_belong_to_the_stage():
    mislas = METHODS.get("mislas")
    assert isinstance(mislas.stage, Stage) and mislas.stage.hint == "mislas_stage1"
    assert METHODS.get("gml").stage.shares_backbone
    assert not METHODS.get("ride_ea").stage.shares_backbone


def _rows(raw: dict) -> dict[str, tuple[str, str]]:
    cfg = ExperimentConfig.from_dict({"data": {"dataset": "synthetic"}, **raw})
    return {k: (r.name, r.family) for k, r in resolve(cfg).rows().items()}


def test_rows_name_methods_as_a_reader_does_and_group_them():
    simple, earlier, plug_in = FAMILIES
    assert _rows({"method": {"name": "bsce"}}) == {"": ("BSCE", simple)}
    assert _rows({"method": {"name": "ride", "args": {"num_experts": 4}}}) == {
        "": ("RIDE (4 experts)", earlier)}
    assert _rows({"method": {"name": "gml"}, "pretrained": {"method": {"name": "ldam_drw"}}}) == {
        "old": ("LDAM-DRW", earlier), "new": ("LDAM-DRW + GML", plug_in),
        "ens": ("LDAM-DRW + GML (ensemble)", plug_in)}
    crt = _rows({"method": {"name": "gml", "loss": "bsce"},
                 "pretrained": {"method": {"name": "ce"}}})
    assert crt["old"] == ("CE", simple) and crt["new"] == ("CE + BSCE re-train", plug_in)
    assert _rows({"method": {"name": "gml"}, "pretrained": {"method": {"name": "mislas"}}})[
        "new"] == ("MiSLAS + GML", plug_in)  # the stage's stage (mixup stage 1) is not named
    assert _rows({"method": {"name": "ride_ea"}}) == {
        "routed": ("RIDE (3 experts) + router", earlier), "all": ("RIDE (3 experts)", earlier)}


def test_every_method_has_a_title_and_a_known_family():
    for name in METHODS.names():
        spec = METHODS.get(name)
        assert spec.family in FAMILIES
        assert callable(spec.title) or spec.title and spec.title != name, name
    with pytest.raises(ValueError, match="family"):
        MethodSpec(name="x", build=lambda *a: None, doc="", family="other")
