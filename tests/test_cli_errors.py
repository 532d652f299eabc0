"""One error style for every subcommand: exit code 2, exactly one line on stderr, no timing line after it.

Each subcommand's required arguments are filled from its own parser (first choice, a number, or a path
that does not exist), so a step added later is covered without editing this test.
"""

from __future__ import annotations

import argparse
import subprocess

import pytest
import yaml
from helpers import MAMMO

from common import __version__
from common.profile import load_profile
from jobs import cli


def _required_argv(step: str, tmp_path) -> list[list[str]]:
    """[step], then one chunk per required argument of `step` with a harmless value (no --profile)."""
    parser = cli.build_parser(load={step})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[step]
    argv = [[step]]
    grouped = {id(a) for g in sub._mutually_exclusive_groups if g.required for a in g._group_actions[1:]}
    for action in sub._actions:
        if id(action) in grouped or not (action.required or not action.option_strings):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        value = str(list(action.choices)[0]) if action.choices else (
            "2" if action.type in (int, float) else str(tmp_path / "missing" / action.dest))
        argv.append([value] if not action.option_strings else [action.option_strings[0], value])
    for group in sub._mutually_exclusive_groups:
        if group.required:
            argv.append([group._group_actions[0].option_strings[0], str(tmp_path / "missing" / "choice")])
    return argv


def _has_profile(step: str) -> bool:
    parser = cli.build_parser(load={step})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[step]
    return any("--profile" in a.option_strings for a in sub._actions)


def _run(argv, capfd) -> tuple[int, list[str]]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capfd.readouterr()
    return code, captured.err.splitlines()


@pytest.fixture(scope="module")
def bad_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "broken.yaml"
    path.write_text("image: {height: 160, width: [128\nmodel:\n  - :\n")
    return path


@pytest.mark.parametrize("step", sorted(cli.STEPS))
def test_every_subcommand_fails_in_one_line(step, tmp_path, bad_yaml, capfd):
    chunks = _required_argv(step, tmp_path)
    assert len(chunks) > 1, "every subcommand has a required argument"
    code, err = _run([token for chunk in chunks[:-1] for token in chunk], capfd)  # one required argument short
    assert (code, len(err)) == (2, 1), err
    assert err[0].startswith(f"mammo {step}: ") and "required" in err[0], err
    if not _has_profile(step):
        return
    for profile, named in (("no-such-profile", "no-such-profile"), (str(bad_yaml), bad_yaml.name)):
        code, err = _run([*(token for chunk in chunks for token in chunk), "--profile", profile], capfd)
        assert (code, len(err)) == (2, 1), (profile, err)
        assert err[0].startswith(f"mammo {step}: ") and named in err[0], err
        assert not (tmp_path / "missing").exists()  # nothing written before the refusal


def test_a_missing_profile_key_names_the_key_path_and_the_file(tmp_path, capfd):
    """The profile is checked whole when it loads: any step refuses it, naming the first missing key."""
    ci = load_profile("ci").to_dict()
    del ci["split"]["seed"]
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump(ci))
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("patient_id,age,label\np1,50,1\np2,51,0\n")
    code, err = _run(["split", "--cohort", str(cohort), "--out", str(tmp_path / "o"), "--profile", str(profile)],
                     capfd)
    assert (code, err) == (2, [f"mammo split: profile {profile} has no key split.seed"])
    code, err = _run(["synth", "--domain", "film", "--out", str(tmp_path / "s"), "--profile", str(profile)], capfd)
    assert (code, err) == (2, [f"mammo synth: profile {profile} has no key split.seed"])
    ci["split"]["seed"] = 42
    del ci["synth"]
    profile.write_text(yaml.safe_dump(ci))
    code, err = _run(["split", "--cohort", str(cohort), "--out", str(tmp_path / "o"), "--profile", str(profile)],
                     capfd)
    assert (code, err) == (2, [f"mammo split: profile {profile} has no key synth"])


def test_pipeline_companion_arguments_and_unknown_task(tmp_path, capfd):
    work = str(tmp_path / "w")
    code, err = _run(["pipeline", "run", "--workdir", work, "--dicom", str(tmp_path)], capfd)
    assert (code, err) == (2, ["mammo pipeline: --dicom needs --cohort as well"])
    code, err = _run(["pipeline", "run", "--profile", "ci", "--workdir", work, "--from", "nope"], capfd)
    assert code == 2 and len(err) == 1 and "--from nope: no such task" in err[0], err
    code, err = _run(["pipeline", "run", "--profile", "ci", "--workdir", work, "--jobs", "0"], capfd)
    assert code == 2 and len(err) == 1 and "--jobs: must be at least 1, got 0" in err[0], err


def test_version_and_a_real_process_prints_nothing_else():
    result = subprocess.run([*MAMMO, "--version"], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, f"mammo {__version__}\n")
    result = subprocess.run([*MAMMO, "baseline-infer", "--model", "m", "--images", "i",
                             "--split", "s", "--out", "o", "--profile", "nope"], capture_output=True, text=True)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
