"""Fingerprints: equal exactly when the result's dependencies are equal (common.fingerprint)."""

from __future__ import annotations

import os

import pytest
import yaml

from common import fingerprint
from common.profile import load_profile


@pytest.fixture
def profile_file(tmp_path):
    """A copy of the ci profile the tests may edit; returns (path, edit(section, key, value))."""
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(load_profile("ci").to_dict()))

    def edit(section: str, key: str, value) -> None:
        data = yaml.safe_load(path.read_text())
        data[section][key] = value
        path.write_text(yaml.safe_dump(data))

    return path, edit


def _split_argv(cohort, out, profile, *extra):
    return ["split", "--cohort", str(cohort), "--out", str(out), "--profile", str(profile), *extra]


def test_same_invocation_same_digest_and_order_or_workers_do_not_matter(tmp_path, profile_file):
    profile, _ = profile_file
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("patient_id,age,label\np1,50,1\n")
    first = fingerprint.of_argv(_split_argv(cohort, tmp_path / "a", profile))
    reordered = ["split", "--profile", str(profile), "--out", str(tmp_path / "b"), f"--cohort={cohort}"]
    assert fingerprint.of_argv(reordered)["digest"] == first["digest"]
    assert fingerprint.of_argv([*_split_argv(cohort, tmp_path / "a", profile), "--workers", "3"]) == first
    assert fingerprint.of_argv(_split_argv(cohort, tmp_path / "a", profile, "--seed", "7"))["digest"] != first["digest"]


def test_profile_values_count_only_where_the_step_reads_them(tmp_path, profile_file):
    profile, edit = profile_file
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("patient_id,age,label\np1,50,1\n")
    report = ["report", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "w" / "report"),
              "--profile", str(profile)]
    split_before, report_before = fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", profile)), \
        fingerprint.of_argv(report)
    edit("metrics", "bootstrap", 7)  # split does not read metrics; the report reads everything
    split_after, report_after = fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", profile)), \
        fingerprint.of_argv(report)
    assert split_after == split_before
    assert report_after["digest"] != report_before["digest"]
    assert fingerprint.explain(report_before, report_after) == "changed: profile metrics.bootstrap"
    edit("split", "seed", 5)
    changed = fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", profile))
    assert fingerprint.explain(split_before, changed) == "changed: profile split.seed"
    # The profile's name does not matter, its values do: the shipped ci profile equals the unedited copy.
    assert fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", "ci")) == split_before


def test_inputs_count_by_content_not_path(tmp_path, profile_file):
    profile, _ = profile_file
    cohort, copy = tmp_path / "cohort.csv", tmp_path / "elsewhere" / "cohort.csv"
    cohort.write_text("patient_id,age,label\np1,50,1\n")
    copy.parent.mkdir()
    copy.write_text(cohort.read_text())
    before = fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", profile))
    assert fingerprint.of_argv(_split_argv(copy, tmp_path / "o", profile)) == before
    cohort.write_text("patient_id,age,label\np1,51,1\n")
    after = fingerprint.of_argv(_split_argv(cohort, tmp_path / "o", profile))
    assert fingerprint.explain(before, after) == "changed: input --cohort"


def test_step_folders_count_by_their_marker_and_external_folders_by_file_stats(tmp_path, profile_file):
    profile, _ = profile_file
    upstream = tmp_path / "synth"
    (upstream / "dicom").mkdir(parents=True)
    (upstream / "cohort.csv").write_text("x\n")
    (upstream / "_SUCCESS.json").write_text('{"run": 1}')
    argv = ["preprocess", "--input", str(upstream / "dicom"), "--cohort", str(upstream / "cohort.csv"),
            "--out", str(tmp_path / "pre"), "--profile", str(profile)]
    before = fingerprint.of_argv(argv)
    assert before["parts"]["inputs"]["--input"][0]["path"] == "dicom"
    (upstream / "_SUCCESS.json").write_text('{"run": 2}')  # the upstream step ran again
    assert fingerprint.explain(before, fingerprint.of_argv(argv)) == "changed: input --cohort, input --input"

    external = tmp_path / "hospital"
    (external / "p1").mkdir(parents=True)
    image = external / "p1" / "L_CC.dcm"
    image.write_bytes(b"DICM")
    argv = ["preprocess", "--input", str(external), "--cohort", str(upstream / "cohort.csv"),
            "--out", str(tmp_path / "pre"), "--profile", str(profile)]
    before = fingerprint.of_argv(argv)
    assert fingerprint.of_argv(argv) == before
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint.explain(before, fingerprint.of_argv(argv)) == "changed: input --input"


def test_a_work_folder_counts_by_its_step_folders_but_not_the_readers_own(tmp_path, profile_file):
    profile, _ = profile_file
    work = tmp_path / "work"
    for name in ("split-a", "report"):
        (work / name).mkdir(parents=True)
        (work / name / "_SUCCESS.json").write_text(f'{{"{name}": 1}}')
    argv = ["report", "--workdir", str(work), "--out", str(work / "report"), "--profile", str(profile)]
    before = fingerprint.of_argv(argv)
    assert set(before["parts"]["inputs"]["--workdir"][0]["work_folder"]) == {"split-a"}
    (work / "report" / "_SUCCESS.json").write_text('{"report": 2}')
    assert fingerprint.of_argv(argv) == before
    (work / "split-a" / "_SUCCESS.json").write_text('{"split-a": 2}')
    assert fingerprint.explain(before, fingerprint.of_argv(argv)) == "changed: input --workdir"


def test_explain_without_a_recorded_fingerprint(tmp_path):
    current = fingerprint.of_argv(["split", "--cohort", "x.csv", "--out", str(tmp_path), "--profile", "ci"])
    assert fingerprint.explain(None, current) == "no fingerprint recorded"
    assert fingerprint.explain(current, current) is None


def test_a_domain_s_own_synthetic_image_size_counts_for_its_synth_task(tmp_path, profile_file):
    """`synth.size_by_domain` overrides `synth.size` for a domain: changing it must rerun that domain's synth (a
    resumed run would keep the film images of the old size under a profile that asks for others)."""
    profile, edit = profile_file
    argv = ["synth", "--domain", "film", "--patients", "4", "--seed", "1", "--out", str(tmp_path / "o"),
            "--profile", str(profile)]
    before = fingerprint.of_argv(argv)
    edit("synth", "size_by_domain", {"film": {"height": 96, "width": 80}})
    after = fingerprint.of_argv(argv)
    assert after["digest"] != before["digest"]
    assert "synth.size_by_domain" in fingerprint.explain(before, after)
