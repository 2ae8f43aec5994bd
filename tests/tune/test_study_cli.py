"""What ``hwr study`` shows people (issue 22): read-only commands create nothing, passwords never appear, a run
off a terminal prints a line per trial and the budget's end, and hints are commands that can be pasted."""

import re
import sqlite3

import optuna
import pytest
from cli_run import here, hwr
from tiny import TINY_STUDY

from hwr.tune.storage import mask_url

pytestmark = pytest.mark.slow


def _files(root) -> list:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "command", [("show", "tiny"), ("best", "tiny"), ("plot", "tiny", "--out", "plots")], ids=lambda c: c[0]
)
def test_read_only_commands_create_nothing(tmp_path, command, capsys, monkeypatch):
    missing = tmp_path / "no" / "such" / "studies.db"
    code, _, err = here(
        capsys, "study", *command, "--storage", f"sqlite:///{missing}", "--root", str(tmp_path / "runs")
    )
    assert code == 2 and "Traceback" not in err
    assert f"no study database at {missing} (check --storage; hwr study run creates it)" in err
    assert _files(tmp_path) == []
    # the default storage (sqlite:///runs/studies.db, relative to the working directory) is not created either
    monkeypatch.chdir(tmp_path)
    code, _, err = here(capsys, "study", *command)
    assert code == 2 and "no study database at runs/studies.db" in err and _files(tmp_path) == []


def test_a_study_name_not_in_the_storage_lists_the_names_there(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="real", storage=url)
    code, _, err = here(capsys, "study", "show", "typo", "--storage", url)
    assert code == 2 and "no study 'typo'" in err and "studies there: real" in err


def test_mask_url():
    assert mask_url("postgresql://user:s3cret@db.example:5432/hwr") == "postgresql://user:***@db.example:5432/hwr"
    assert (
        mask_url("postgresql+psycopg2://u:p@ss@h/db?sslmode=require")
        == "postgresql+psycopg2://u:***@h/db?sslmode=require"
    )
    assert (
        mask_url("postgresql://u@h/db?sslmode=require&password=s3cret")
        == "postgresql://u@h/db?sslmode=require&password=***"
    )
    for plain in ("postgresql://u@h:5432/db", "postgresql://h:5432/db?sslmode=require", "sqlite:///runs/studies.db"):
        assert mask_url(plain) == plain


@pytest.mark.parametrize("command", [("run", str(TINY_STUDY)), ("show", "tiny")], ids=lambda c: c[0])
def test_an_unreachable_storage_does_not_echo_its_password(command):
    url = "postgresql+psycopg2://hwr:s3cret-pw@127.0.0.1:1/studies?sslmode=disable"
    p = hwr("study", *command, "--storage", url, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "s3cret-pw" not in p.stderr + p.stdout
    assert "postgresql+psycopg2://hwr:***@127.0.0.1:1/studies" in p.stderr


def test_a_run_off_a_terminal_prints_a_line_per_trial_and_pasteable_hints(tmp_path):
    db = tmp_path / "s.db"
    common = ["--storage", f"sqlite:///{db}", "--root", str(tmp_path / "runs")]
    p = hwr("study", "run", str(TINY_STUDY), *common, "--n-trials", "2", fresh=True)  # captured: not a TTY
    lines = p.stdout.splitlines()
    per_trial = [line for line in lines if re.match(r"trial \d+ (COMPLETE|PRUNED)  value ", line)]
    assert len(per_trial) == 2, p.stdout
    assert all("hidden=" in line and "lr=" in line and line.endswith(" s") for line in per_trial), per_trial
    assert "study tiny: budget of 2 trials reached (2 complete, 0 pruned, 0 failed)" in lines, p.stdout
    assert "Traceback" not in p.stderr and "UserWarning" not in p.stderr and "site-packages" not in p.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone() == (2,)
    show = hwr("study", "show", "tiny", *common)
    hint = f"hwr study best tiny --evaluate --storage sqlite:///{db} --root {tmp_path / 'runs'}"
    assert hint in show.stdout.replace("\n", " "), show.stdout
    assert "UserWarning" not in show.stderr and "site-packages" not in show.stderr
