import pytest

from lt_ray.config import ExperimentConfig, check_key, load_yaml, parse_override
from lt_ray.errors import ConfigError
from lt_ray.resolution import resolve


def test_defaults_round_trip_through_dict():
    cfg = ExperimentConfig()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_names_the_dotted_path_and_suggests():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        ExperimentConfig.from_dict({"optim": {"lrr": 0.1}})


def test_nested_unknown_key_path():
    with pytest.raises(ConfigError, match=r"data\.synthetic\.clases"):
        ExperimentConfig.from_dict({"data": {"synthetic": {"clases": 3}}})


@pytest.mark.parametrize(
    "raw, path",
    [
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 1.5}}, "train.epochs"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"train": {"channels_last": 1}}, "train.channels_last"),
        ({"optim": {"milestones": 0.5}}, "optim.milestones"),
        ({"data": 3}, "data"),
    ],
)
def test_wrong_types_are_rejected_with_path(raw, path):
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        ExperimentConfig.from_dict(raw)


def test_int_is_accepted_for_float_and_lists_become_tuples():
    cfg = ExperimentConfig.from_dict({"optim": {"lr": 1, "milestones": [0.5, 0.75]}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.milestones == (0.5, 0.75)


def test_dotted_overrides_are_parsed_as_yaml():
    assert parse_override("optim.lr=0.05") == ("optim.lr", 0.05)
    assert parse_override("train.channels_last=false") == ("train.channels_last", False)
    assert parse_override("method.loss=focal") == ("method.loss", "focal")
    cfg = ExperimentConfig().replace(dict([parse_override("method.loss_args.gamma=2")]))
    assert cfg.method.loss_args == {"gamma": 2}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_yaml(str(bad))


# ---------------------------------------------------------------- YAML 1.2 floats


@pytest.mark.parametrize(
    "text, value",
    [("5e-4", 5e-4), ("1e-3", 1e-3), ("2e0", 2.0), ("1E5", 1e5), ("+1e5", 1e5),
     ("-2.5e3", -2500.0), ("1.0e4", 1e4), ("0.1", 0.1), (".5", 0.5)],
)
def test_scientific_notation_is_a_float_in_overrides(text, value):
    key, parsed = parse_override(f"optim.weight_decay={text}")
    assert isinstance(parsed, float) and parsed == value


@pytest.mark.parametrize("text, value", [("10", 10), ("abc", "abc"), ("1e", "1e"),
                                         ("e5", "e5"), ("true", True), ("null", None)])
def test_other_scalars_keep_their_yaml_meaning(text, value):
    assert parse_override(f"k={text}")[1] == value


def test_scientific_notation_in_yaml_files(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("optim: {weight_decay: 5e-4, lr: 1E-1}\ntrain: {epochs: 1e2}\n"
                    "method: {name: focal, loss_args: {gamma: 2e0}}\n")
    raw = load_yaml(str(path))
    assert raw["optim"] == {"weight_decay": 5e-4, "lr": 0.1}
    cfg = ExperimentConfig.from_dict(raw)
    assert cfg.optim.weight_decay == 5e-4 and cfg.train.epochs == 100
    assert resolve(cfg).config.method.loss_args == {"gamma": 2.0}


def test_pyyaml_safe_load_itself_is_unchanged():
    import yaml

    from lt_ray.config import YamlLoader, yaml_load

    assert yaml.safe_load("5e-4") == "5e-4"  # the subclass does not patch SafeLoader
    assert issubclass(YamlLoader, yaml.SafeLoader) and yaml_load("5e-4") == 5e-4


def test_undecodable_or_deep_files_are_config_errors(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match=r"bin\.yaml"):
        load_yaml(str(binary))
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml"):
        load_yaml(str(deep))


def test_float_overflow_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.lr"):
        ExperimentConfig.from_dict({"optim": {"lr": 10**400}})


def test_check_key():
    check_key("optim.lr")
    check_key("method.loss_args.anything")
    with pytest.raises(ConfigError, match="did you mean 'method.loss'"):
        check_key("method.los")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        check_key("optim.lr.x")


# ---------------------------------------------------------------- typed loss/rule arguments


@pytest.mark.parametrize(
    "method, section, key, value, expected",
    [
        ("focal", "loss_args", "gamma", True, "must be a number, got True"),
        ("focal", "loss_args", "gamma", "2", "must be a number, got '2'"),
        ("focal", "loss_args", "gamma", None, "must be a number, got None"),
        ("focal", "loss_args", "gamma", [1.0], "must be a number, got [1.0]"),
        ("focal", "loss_args", "gamma", float("nan"), "must be a finite number"),
        ("feabal", "loss_args", "curriculum", 1, "must be true or false, got 1"),
        ("ldam_drw", "rule_args", "beta", "0.9", "must be a number, got '0.9'"),
        ("ldam_drw", "rule_args", "start_fraction", {"a": 1}, "must be a number"),
    ],
)
def test_loss_and_rule_args_are_type_checked(method, section, key, value, expected):
    cfg = ExperimentConfig.from_dict({"method": {"name": method, section: {key: value}}})
    with pytest.raises(ConfigError) as info:
        resolve(cfg)
    assert f"'method.{section}.{key}'" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "method, section, args, expected",
    [
        ("focal", "loss_args", {"gamma": -1}, "method.loss_args.gamma must be >= 0, got -1.0"),
        ("ldam_drw", "loss_args", {"s": 0}, "method.loss_args.s must be > 0"),
        ("ldam_drw", "loss_args", {"max_m": -0.5}, "method.loss_args.max_m must be >= 0"),
        ("lade", "loss_args", {"alpha": -1}, "method.loss_args.alpha must be >= 0"),
        ("feabal", "loss_args", {"lambda": -1}, "method.loss_args.lambda must be >= 0"),
        ("ldam_drw", "rule_args", {"beta": 1}, "method.rule_args.beta must be in [0, 1)"),
        ("ldam_drw", "rule_args", {"start_fraction": 1.5},
         "method.rule_args.start_fraction must be in [0, 1]"),
        ("ce", "loss_args", {"gamma": 2.0}, "loss 'ce' has no hyper-parameter 'gamma'"),
        ("feabal", "loss_args", {"lambda": 1, "lambda_": 2}, "are the same key"),
    ],
)
def test_loss_and_rule_args_are_range_checked(method, section, args, expected):
    cfg = ExperimentConfig.from_dict({"method": {"name": method, section: args}})
    with pytest.raises(ConfigError) as info:
        resolve(cfg)
    assert expected in str(info.value)


def test_int_loss_args_become_floats_and_lambda_is_lambda_():
    cfg = ExperimentConfig.from_dict({"method": {"name": "feabal", "loss_args": {"lambda": 40}}})
    args = resolve(cfg).config.method.loss_args
    assert args == {"lambda_": 40.0, "curriculum": True} and isinstance(args["lambda_"], float)


# ---------------------------------------------------------------- resolve


def test_resolve_fills_the_recipe_and_every_hyperparameter():
    cfg = resolve(ExperimentConfig.from_dict({"method": {"name": "ldam_drw"}})).config
    assert (cfg.method.loss, cfg.method.rule, cfg.model.head) == ("ldam", "drw", "normed")
    assert cfg.method.loss_args == {"max_m": 0.5, "s": 30.0}
    assert cfg.method.rule_args == {"beta": 0.9999, "start_fraction": 0.8}
    plain = resolve(ExperimentConfig()).config
    assert (plain.method.loss, plain.method.rule, plain.model.head) == ("ce", "none", "linear")
    assert plain.method.loss_args == {} and plain.method.rule_args == {}


def test_resolve_is_idempotent_and_keeps_given_values():
    raw = ExperimentConfig.from_dict(
        {"method": {"name": "focal", "loss_args": {"gamma": 2}, "rule": "drw"}}
    )
    once = resolve(raw).config
    assert once.method.loss_args == {"gamma": 2.0}
    assert once.method.rule_args == {"beta": 0.9999, "start_fraction": 0.8}
    assert resolve(once).config == once
    assert ExperimentConfig.from_dict(once.to_dict()) == once  # round-trips through YAML
    assert resolve(ExperimentConfig.from_dict(once.to_dict())).config == once


def test_resolved_args_of_another_loss_are_still_refused():
    resolved = resolve(ExperimentConfig.from_dict({"method": {"name": "focal"}})).config
    recorded = ExperimentConfig.from_dict(resolved.to_dict())  # e.g. a run's config.yaml
    with pytest.raises(ConfigError, match="loss 'ce' has no hyper-parameter 'gamma'"):
        resolve(recorded.replace({"method.loss": "ce"}))


# ---------------------------------------------------------------- loss / head / rule


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"method.name": "ldam_drw", "model.head": "linear"},
         "loss 'ldam' needs model.head=normed (its logits are the cosines of the NormedLinear "
         "head), but model.head is 'linear'; set model.head=normed"),
        ({"method.loss": "ldam"}, "but model.head is 'linear' (the head of method 'ce'); "
         "set model.head=normed"),
        ({"method.name": "ldam_drw", "method.loss": "ce"},
         "loss 'ce' needs model.head=linear"),
        ({"method.name": "bsce", "model.head": "normed"}, "set model.head=linear"),
        ({"method.name": "lade", "method.rule": "drw"},
         "loss 'lade' ignores class weights, so train rule 'drw' would do nothing; "
         "use rule none or resample"),
        ({"method.name": "lade", "method.rule": "reweight"}, "train rule 'reweight'"),
        ({"method.loss": "gml", "method.rule": "drw"}, "loss 'gml' ignores class weights"),
    ],
)
def test_incompatible_loss_head_rule_is_refused(changes, expected):
    with pytest.raises(ConfigError) as info:
        resolve(ExperimentConfig().replace(changes))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"method.loss": "ldam", "model.head": "normed"},
        {"method.name": "lade", "method.rule": "resample"},
        {"method.loss": "gml"},
        {"method.name": "focal", "method.rule": "drw"},
        {"method.name": "bsce", "method.rule": "reweight"},
        {"method.name": "feabal", "method.rule": "drw"},
    ],
)
def test_compatible_combinations_pass(changes):
    resolve(ExperimentConfig().replace(changes))


# ---------------------------------------------------------------- device


def test_cuda_device_is_valid_config_even_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", "cpu", "auto"):
        resolve(ExperimentConfig().replace({"train.device": device}))
    for bad in ("gpu", "cuda:x", "meta", ""):
        with pytest.raises(ConfigError, match="train.device"):
            resolve(ExperimentConfig().replace({"train.device": bad}))


def test_run_refuses_cuda_without_cuda_before_reading_data(monkeypatch, tmp_path, tiny_cfg):
    import torch

    from lt_ray import experiment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(experiment, "build_dataset", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        experiment.run(resolve(tiny_cfg.replace({"train.device": "cuda"})), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- data counts without data


def test_expected_class_counts_match_the_long_tail_formula():
    from lt_ray.config import DataConfig
    from lt_ray.data import expected_class_counts

    assert expected_class_counts(DataConfig()) == [5000, 2997, 1796, 1077, 645, 387, 232, 139,
                                                    83, 50]
    c100 = expected_class_counts(DataConfig(dataset="cifar100"))
    assert len(c100) == 100 and (c100[0], c100[-1]) == (500, 5)
    with pytest.raises(ConfigError, match="without training images"):
        resolve(ExperimentConfig().replace({"data.dataset": "synthetic",
                                             "data.imb_factor": 1000}))


@pytest.mark.parametrize(
    "key, value, expected",
    [("data.synthetic.num_classes", 2**32, "must be in 2..1000"),
     ("data.synthetic.n_max", 10**9, "GiB"),
     ("data.synthetic.noise", float("inf"), "data.synthetic.noise"),
     ("seed", -1, "seed must be in [0, 2**32 - 1]"),
     ("data.split_seed", 2**32, "data.split_seed"),
     ("optim.momentum", 1.0, "optim.momentum must be in [0, 1)"),
     ("optim.nesterov", True, None),
     ("train.cutout", -1, "train.cutout must be >= 0")],
)
def test_values_that_would_fail_or_hang_later_are_refused_now(key, value, expected):
    changes = {"data.dataset": "synthetic", key: value}
    if expected is None:  # nesterov with the default momentum is fine; without momentum not
        resolve(ExperimentConfig().replace(changes))
        changes["optim.momentum"] = 0.0
        expected = "optim.nesterov needs optim.momentum > 0"
    with pytest.raises(ConfigError) as info:
        resolve(ExperimentConfig().replace(changes))
    assert expected in str(info.value)


def test_artifact_hashes_of_earlier_versions_stay_valid():
    """A field added later (optim.milestone_lag_epochs) is hashed only away from its default:
    the stage artifacts published before it (hashes computed by lt-ray before issue 14) are
    found again, no base is retrained; a recipe that really changed (PaCo's steps) is not."""
    from lt_ray.resolution import resolve

    def digest(raw):
        return resolve(ExperimentConfig.from_dict(raw)).hash

    assert digest({}) == "c3e3576001a49a85"
    assert digest({"method": {"name": "mislas_stage1"}, "data": {"imb_factor": 50}}) == (
        "166a4889ba60b79f")
    assert digest({"method": {"name": "paco"}}) != "1cc0babf5a599828"


@pytest.mark.parametrize(("text", "needle"), [
    ("name: x\nspace:\n  optim.lr: {uniform: [0.1, 0.2]}\nbase: {}\nspace: {}\n",
     ":5: duplicate key 'space' (first at line 2, again at line 5)"),
    ("base:\n  optim:\n    lr: 0.1\n    momentum: 0.9\n    lr: 0.2\n",
     ":5: duplicate key 'lr' (first at line 3, again at line 5)"),
])
def test_duplicate_yaml_keys_are_refused_at_every_level(tmp_path, text, needle):
    from lt_ray.config import load_yaml

    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(str(path))
    assert needle in str(caught.value) and str(path) in str(caught.value)


def test_yaml_merge_keys_and_distinct_keys_still_load(tmp_path):
    from lt_ray.config import load_yaml

    path = tmp_path / "ok.yaml"
    path.write_text("a: &x {lr: 0.1}\nb:\n  <<: *x\n  momentum: 0.9\n")
    assert load_yaml(str(path)) == {"a": {"lr": 0.1}, "b": {"lr": 0.1, "momentum": 0.9}}
