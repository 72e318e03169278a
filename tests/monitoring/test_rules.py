"""A rule config is built from the classes of monitoring.rules only, and a mistyped setting is one clear line."""

from __future__ import annotations

import pytest

from omics_risk.monitoring.rules import FloorRule, RiseRule, rule_from_config


def test_settings_take_the_type_of_their_default() -> None:
    rule = rule_from_config({"kind": "rise", "name": "r", "fold": "3", "min_alt": 4.0, "confirm": True})
    assert isinstance(rule, RiseRule) and rule.fold == 3.0 and rule.min_alt == 4 and isinstance(rule.min_alt, int)
    assert isinstance(rule_from_config({"kind": "floor", "floor": 0.002}), FloorRule)


@pytest.mark.parametrize(("setting", "message"), [
    ({"fold": "abc"}, "rule r: fold must be a number, got 'abc' (e.g. --set rule.fold=2.0)"),
    ({"confirm": "maybe"}, "rule r: confirm must be true or false, got 'maybe' (e.g. --set rule.confirm=false)"),
    ({"min_alt": 2.5}, "rule r: min_alt must be a whole number, got 2.5 (e.g. --set rule.min_alt=3)"),
    ({"foldd": 3}, "rule r: unknown setting(s) foldd"),
    ({"fold": 0.5}, "rule r: fold must be > 1"),
])
def test_a_bad_setting_names_itself(setting: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rule_from_config({"kind": "rise", "name": "r", **setting})
    assert str(err.value).startswith(message)


def test_only_the_rule_classes_can_be_named() -> None:
    with pytest.raises(ValueError, match="is not a monitoring rule"):
        rule_from_config({"_target_": "os.system", "name": "x"})
