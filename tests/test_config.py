import pytest

from lt_ray.config import ExperimentConfig, load_yaml, parse_override
from lt_ray.errors import ConfigError


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
