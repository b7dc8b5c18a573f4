import pytest

from model.config import TrialConfig, field_names
from model.errors import ConfigError


def test_defaults_are_valid_and_frozen():
    cfg = TrialConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_are_listed_with_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown TrialConfig field\(s\) 'lrate'; valid fields are: encoder,"):
        TrialConfig.from_dict({"lrate": 0.1})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"focal_gamma": -1.0}, r"`focal_gamma` is -1.0, but must be > 0"),
        ({"dropout": 1.0}, r"`dropout` is 1.0, but must be < 1"),
        ({"batch_size": 0}, r"`batch_size` is 0, but must be >= 1"),
        ({"batch_size": 3.5}, r"`batch_size` is 3.5 \(float\), but must be a int"),
        ({"loss": "hinge"}, r"'hinge' is not a known loss; valid loss names are: ce, dice, focal"),
        ({"pooler": "cls+avg"}, r"'avg' is not a known pooler; valid pooler names are: attention, bert_pooler, cls"),
        ({"msd_reduce": "max"}, r"`msd_reduce` is 'max', but must be one of: mean, sum"),
        ({"hidden_size": 30, "num_heads": 4}, r"`hidden_size` 30 is not divisible by `num_heads` 4"),
        ({"lr": float("nan")}, r"`lr` is nan, but must be a finite number"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(values)


def test_harmless_number_types_are_coerced():
    cfg = TrialConfig.from_dict({"batch_size": 32.0, "lr": 1})
    assert cfg.batch_size == 32 and isinstance(cfg.batch_size, int) and isinstance(cfg.lr, float)


def test_multiple_poolers():
    assert TrialConfig(pooler="cls+mean").poolers == ("cls", "mean")
    assert "pooler" in field_names()
