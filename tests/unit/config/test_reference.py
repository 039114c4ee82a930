"""The configuration reference (config.reference): the README's table is what the models say."""
from __future__ import annotations


def test_the_readme_reference_is_what_the_models_say():
    from comfyart.config.reference import README, reference

    assert reference() in README.read_text(), "run: python3 -m comfyart.config.reference --write"


def test_the_reference_names_every_field_with_its_type_default_and_purpose():
    from comfyart.config.reference import rows

    table = {path: (kind, default, what) for path, kind, default, what in rows()}
    assert table["pool.min_containers"] == ("integer (≥ 0)", "`1`", "always running, even with an empty queue")
    assert table["docker.hosts[].ports"][1] == "**required**"
    assert table["auth.quotas.burst"][0] == "integer (≥ 1)"
    assert table["scheduler.strategy"][0].startswith("`least_busy`")
    assert all(what for what in (w for _, _, w in table.values())), "a field without a description"
    assert len(table) > 100
