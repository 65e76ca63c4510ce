from pathlib import Path

import pytest

from stack import doctor


def test_every_program_the_lab_needs_is_found():
    checks = doctor.check_programs()
    assert {c.name for c in checks} == set(doctor.PROGRAMS)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


def test_a_missing_program_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(doctor, "PROGRAMS", ["no-such-server-xyz"])
    (check,) = doctor.check_programs()
    assert not check.ok and "apt-get install" in check.fix
    assert "->" in check.line()


def test_disk_and_ports(tmp_path: Path):
    assert doctor.check_disk(tmp_path).ok
    assert doctor.check_ports().ok


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_lab_passes_and_leaves_nothing(runs_root: Path):
    check = doctor.check_smoke_lab(seconds=4)
    assert check.ok, check.line()


def test_cpus_the_course_needs():
    assert doctor.check_cpus(2).ok and "2 available" in doctor.check_cpus(2).detail
    one = doctor.check_cpus(1)
    assert not one.ok and "INCONCLUSIVE" in one.fix
    assert doctor.check_cpus().name == "CPU cores"
