"""The CLI in real use (issue 22): a quick ``hwr --help``, Ctrl-C in the first epoch and the hint that resumes,
flags a resume cannot honour, two runs into one folder, and the user's environment (a device this machine
lacks, a folder it cannot write) reported as one line and exit code 2, never as a bug. The console script runs in
a subprocess where the process itself is the point (an unwritable folder, a held folder, a resume); the other bad
inputs run ``hwr.cli.main`` in this process (``bad_here``: the same exit code and line, without importing torch
again for each)."""

import argparse
import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import bad, bad_here, hwr
from tiny import run_config

from hwr import cli, runs
from hwr.config import to_dict

TINY = ["--epochs", "1", "--limit-train", "256", "--limit-test", "100", "--batch-size", "64", "--no-compile"]


def test_top_level_help_imports_no_torch():
    code = "import sys\nfrom hwr.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    code += "print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip().splitlines()[-1] == "False", p.stdout
    assert all(name in p.stdout for name in cli.COMMANDS)


def test_command_table_matches_the_modules_parsers():
    full = cli.build_parser()  # every module's own parsers
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps == {name: text for name, (_, text) in cli.COMMANDS.items()}
    for name, (module, _) in cli.COMMANDS.items():  # the named command's parser is its module's, fully built
        parser = cli.build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert sub.choices[name]._actions[1:], (name, module)  # more than -h


def test_environment_errors_are_one_line_others_are_bugs():
    full = cli.environment_error(OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoint"))
    assert full.startswith("cannot write /data/run/checkpoint: No space left on device; free space")
    assert "writable disk" in cli.environment_error(OSError(errno.EROFS, "Read-only file system", "/ro"))
    assert cli.environment_error(OSError(errno.ECONNRESET, "reset")) is None  # not the user's doing: a bug


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys, which nobody (not even root) may write")
def test_an_unwritable_out_folder_is_one_line():
    bad("train", "--recipe", "fast", *TINY, "--out", "/sys/hwr-test/run", match="cannot write /sys/hwr-test")


@pytest.mark.parametrize("device", ["meta", "mps", "xpu"])
def test_a_device_this_machine_cannot_run_is_one_line(tmp_path, device, capsys):
    args = ("train", "--recipe", "fast", *TINY, "--device", device, "--out", str(tmp_path / "r"))
    bad_here(capsys, *args, match=device)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", [["--epochs", "3"], ["--recipe", "fast"], ["--dataset", "optdigits"]])
def test_resume_refuses_flags_that_change_the_run(tmp_path, flag, capsys):
    runs.open_run(tmp_path / "r", run_config(), type(run_config()), resume=False)
    bad_here(capsys, "train", "--out", str(tmp_path / "r"), "--resume", *flag, match=f"so {flag[0]} cannot change")


def test_stopped_in_epoch_one_resumes_from_config_json_and_the_hint_works(tmp_path):
    out = tmp_path / "r"
    runs.open_run(out, run_config(), type(run_config()), resume=False)  # what a Ctrl-C before epoch 1 ends leaves
    bad("train", "--recipe", "fast", "--out", str(out), match="hwr train --out")  # another config: refused
    hint = cli.resume_command(argparse.Namespace(out=out, data_root=None, skip_bad=False))
    assert hint == f"hwr train --out {out} --resume"
    hwr(*hint.split()[1:], "--no-compile", fresh=True)  # pasted into a shell: a fresh interpreter
    metrics = json.loads((out / runs.METRICS).read_text())
    assert metrics["config"] == to_dict(run_config()) and len(metrics["epochs"]) == 1


def test_the_resume_hint_keeps_a_non_default_data_root(tmp_path):
    args = argparse.Namespace(out=tmp_path / "my run", data_root=str(tmp_path / "data"), skip_bad=True)
    assert cli.resume_command(args) == (
        f"hwr train --out '{tmp_path}/my run' --resume --data-root {tmp_path}/data --skip-bad"
    )


def test_without_a_recipe_it_says_which_it_runs(tmp_path):
    p = hwr("train", "--device", "meta", "--out", str(tmp_path / "r"), check=False)  # stops before training
    assert "no --recipe: training the default 'seed' recipe" in p.stdout
    assert "no --recipe" not in p.stderr  # stderr holds the error alone (one line)


def test_a_second_train_into_a_held_folder_names_the_holder(tmp_path):
    out = tmp_path / "r"
    code = "import sys, time; from pathlib import Path; from hwr import runs\n"
    code += "with runs.locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        bad(
            "train",
            "--recipe",
            "fast",
            *TINY,
            "--out",
            str(out),
            match=f"in use by another hwr process (pid {holder.pid})",
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (out / runs.CONFIG).exists()  # the refused run wrote nothing


def test_saved_inputs_of_the_same_name_are_kept_apart(tmp_path):
    paths = ["a/1.png", "b/1.png", "c/1.jpg", "1-2.png", "d/7.png"]
    names = cli.saved_names(paths, "_28x28.png")
    assert names == ["1_28x28.png", "1-2_28x28.png", "1-3_28x28.png", "1-2-2_28x28.png", "7_28x28.png"]
    assert len(set(names)) == len(names)
    import torch

    images = [torch.full((1, 28, 28), 10 * i, dtype=torch.uint8) for i in range(len(paths))]
    written = cli.save_inputs(tmp_path / "seen", paths, images, "_28x28.png")
    from PIL import Image

    assert [int(Image.open(f).getpixel((0, 0))) for f in written] == [0, 10, 20, 30, 40]  # none overwritten


def test_predict_reads_the_run_from_run_and_the_old_model_spelling_warns():
    parse = lambda *a: cli.build_parser(["predict"]).parse_args(["predict", *a])
    from hwr.cli import train as cli_train

    assert cli_train.run_of_predict(parse("--run", "runs/fast", "x.png")) == "runs/fast"
    p = subprocess.run(
        [sys.executable, "-c", "from hwr.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
         "predict", "--model", "no/such/run", "x.png"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 2
    assert p.stderr.splitlines()[0] == "hwr: --model RUN is now --run RUN; --model will be removed in 0.4"
    assert "no/such/run does not exist" in p.stderr
    with pytest.raises(cli.UsageError, match="needs the trained model's run folder"):
        cli_train.run_of_predict(parse("x.png"))
    with pytest.raises(cli.UsageError, match="give the run folder once"):
        cli_train.run_of_predict(parse("--run", "a", "--model", "b", "x.png"))


def _options(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prefix} {name}")
        elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
            yield prefix, action


def test_every_option_of_every_command_has_a_help_line():
    options = _options(cli.build_parser(), "hwr")
    missing = [f"{where}: {'/'.join(a.option_strings) or a.dest}" for where, a in options if not (a.help or "").strip()]
    assert missing == [], "options without a help line:\n" + "\n".join(missing)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "command",
    [
        ["data", "info", "folder:{t}/no-folder"],
        ["data", "show", "csv:{t}/no.csv", "--out", "{t}/out/show.png"],
        ["data", "compare", "mnist", "folder:{t}/no-folder", "--out", "{t}/out/cmp.png"],
        ["evaluate", "{t}/no-run"],
        ["evaluate", "{t}/no-run", "--dataset", "folder:{t}/no-folder"],
        ["predict", "--run", "{t}/no-run", "{t}/x.png"],
    ],
)
def test_a_read_only_command_given_a_missing_input_writes_nothing(tmp_path, command, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HWR_DATA", str(tmp_path / "data"))
    before = _tree(tmp_path)
    capsys.readouterr()
    assert cli.main([c.format(t=tmp_path) for c in command]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert _tree(tmp_path) == before  # no data fetched, no cache, no folder made


def test_saved_inputs_never_overwrite_an_input_in_the_folder_written_to(tmp_path, capsys):
    """``hwr predict ow/7.png ow/7_28x28.png --save-input ow``: the second input is a file the first one's saved
    picture would replace; it is kept, and the picture saved under another name, said on stderr."""
    import torch
    from PIL import Image

    ow = tmp_path / "ow"
    ow.mkdir()
    Image.new("L", (28, 28), 200).save(ow / "7_28x28.png")
    before = (ow / "7_28x28.png").read_bytes()
    paths = [str(ow / "7.png"), str(ow / "7_28x28.png")]
    images = [torch.full((1, 28, 28), v, dtype=torch.uint8) for v in (10, 20)]
    written = cli.save_inputs(ow, paths, images, "_28x28.png")
    assert (ow / "7_28x28.png").read_bytes() == before
    assert [p.name for p in written] == ["7-2_28x28.png", "7_28x28_28x28.png"]
    assert "an input file has its name" in capsys.readouterr().err
