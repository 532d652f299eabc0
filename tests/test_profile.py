"""The typed profile (common.profile): loaded and checked once, defaults in the type, recorded the same way."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import yaml

from common.artifacts import SUCCESS, step_output
from common.profile import PROFILE_NAMES, Profile, ProfileError, ProfileKeyError, load_profile, profile_from_mapping


def _file(name: str) -> dict:
    return yaml.safe_load(resources.files("common.profiles").joinpath(f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_the_shipped_profiles_load_and_keep_their_file_values(name):
    profile = load_profile(name)
    assert isinstance(profile, Profile) and profile.name == name and profile.source == name
    raw = _file(name)
    resolved = profile.to_dict()

    def same(expected, got, path=""):
        if isinstance(expected, dict):
            for key, value in expected.items():
                same(value, got[key], f"{path}{key}.")
        else:
            assert got == expected, path  # every value in the file is what the type holds (no coercion drift)

    same(raw, resolved)
    assert profile_from_mapping(resolved, name) == profile  # the resolved form loads back to the same profile


def test_defaults_live_in_the_type_and_are_resolved_into_the_record():
    ci = load_profile("ci")
    assert "runtime" not in _file("ci") and "seed" not in _file("ci")["training"]
    assert ci.runtime.threads == 2 and ci.training.seed == 42 and ci.radiomics.halving_factor == 3
    assert ci.to_dict()["runtime"] == {"threads": 2}
    # A phase without its own batch size or patience takes the shared ones, also after the shared one changed.
    assert ci.training.phase("stage1_config2").batch_size == ci.training.batch_size == 8
    assert ci.replaced({"training.batch_size": 4}).training.phase("stage2").batch_size == 4
    demo = load_profile("demo")
    assert demo.training.phase("pretrain").early_stopping_patience == 14  # its own, not the shared 3
    assert demo.training.phase("stage1_config1").early_stopping_patience == 3
    assert demo.synth.size_of("film").height == 576 and demo.synth.size_of("hospital").height == 768


@pytest.mark.parametrize("change,message", [
    ({"split.test": 0.5}, "sum to 1"),
    ({"split.age_bins": [50, 40]}, "increasing"),
    ({"radiomics.search": "random"}, "grid or halving"),
    ({"training.stage1.epochs": 2.5}, "training.stage1.epochs must be an integer"),
    ({"training.flip_tta": "yes"}, "training.flip_tta must be true or false"),
    ({"image.height": "tall"}, "image.height must be an integer"),
    ({"model.backbone_widht": 0.5}, "unknown key model.backbone_widht"),
    ({"image": [160, 128]}, "image must be a mapping"),
])
def test_a_bad_value_fails_at_load_naming_the_key_and_the_file(change, message):
    with pytest.raises(ProfileError, match=message) as raised:
        load_profile("ci").replaced(change)
    assert "profile ci" in str(raised.value)


def test_a_missing_key_is_a_key_error_naming_its_path(tmp_path):
    data = load_profile("ci").to_dict()
    del data["metrics"]["seed"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileKeyError, match=f"profile {path} has no key metrics.seed"):
        load_profile(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ProfileError, match="not a YAML mapping"):
        load_profile(str(path))


def test_numbers_yaml_reads_as_text_are_numbers():
    assert load_profile("ci").replaced({"training.stage1.learning_rate": "1e-3"}).training.stage1.learning_rate == 1e-3


def test_every_step_records_the_resolved_profile_the_same_way(tmp_path):
    profile = load_profile("ci")
    with step_output("split", tmp_path / "a", {"cohort": "c.csv"}, profile):
        pass
    marker = json.loads((tmp_path / "a" / SUCCESS).read_text())
    assert marker["profile"] == {"name": "ci", "values": json.loads(json.dumps(profile.to_dict()))}
    assert "profile" not in marker["inputs"]
    assert profile_from_mapping(marker["profile"]["values"], "recorded") == profile
