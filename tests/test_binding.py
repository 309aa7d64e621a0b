"""The binding's shape: one table of the core's enums that Python reads."""

import pytest

import rmtl
from rmtl import _core
from rmtl.agent import WEIGHTINGS
from rmtl.datasets import FieldSpec
from rmtl.env import REWARDS


def test_enums_table_names_every_backbone_and_choice():
    enums = _core.enums
    assert set(enums) == {
        "backbone",
        "tables",
        "first_layer",
        "weighting",
        "reward",
        "order",
        "policy",
        "field_kind",
    }
    assert set(enums["first_layer"]) == {"auto", "plain", "distinct"}
    assert set(enums["backbone"]) == set(rmtl.models.BACKBONES)
    for name, cls in rmtl.models.BACKBONES.items():
        model = cls([3, 4], 1, 2, embed_dim=4, bottom_dims=(4,), tower_dims=(4,))
        assert model.name == name
    assert WEIGHTINGS == (*enums["weighting"], "continued") and REWARDS is enums["reward"]
    for table in enums.values():
        assert sorted(table.values()) == list(range(len(table)))


def test_field_spec_kind_is_a_core_field_kind():
    assert FieldSpec("x", "item_category", ("a", "b")).levels == 2
    with pytest.raises(ValueError, match="kind: expected one of"):
        FieldSpec("x", "item_colour", ("a", "b"))
