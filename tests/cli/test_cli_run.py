"""tests/cli_run.py: a command forked from the zygote answers as the same command in a fresh interpreter (streams,
exit code, argv, directory, environment), and a command whose environment changes what is read at import runs
in a fresh interpreter."""

import os

import cli_run
from cli_run import hwr, python


def test_a_forked_command_answers_as_a_fresh_one():
    for args in (["data", "list"], ["train", "--recipe", "nope"]):
        forked, fresh = hwr(*args, check=False), hwr(*args, check=False, fresh=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.returncode == 2 and "invalid choice: 'nope'" in forked.stderr


def test_a_forked_script_sees_its_argv_directory_and_environment(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "print(sys.argv[1:], os.getcwd(), os.environ.get('HWR_PROBE'), sys.path[0] == os.path.dirname(sys.argv[0]))\n"
        "sys.exit(3)\n"
    )
    env = {**os.environ, "HWR_PROBE": "seen"}
    forked = python(str(script), "a", "b", cwd=tmp_path, env=env)
    fresh = python(str(script), "a", "b", cwd=tmp_path, env=env, fresh=True)
    assert forked.returncode == fresh.returncode == 3
    assert forked.stdout == fresh.stdout == f"['a', 'b'] {tmp_path} seen True\n"


def test_only_variables_read_when_a_command_starts_may_differ_from_the_zygote(tmp_path):
    base = cli_run._context()[1]  # the environment the zygote started with
    assert cli_run._forkable({**base, "HWR_DATA": "/elsewhere", "COLUMNS": "60", "PYTEST_CURRENT_TEST": "x"})
    assert not cli_run._forkable({**base, "OMP_NUM_THREADS": "7"})  # torch reads it when it starts
    assert not cli_run._forkable({k: v for k, v in base.items() if k != "PATH"})

    def parent(env: dict[str, str]) -> int:  # the pid of the process that started the command's
        return int(python(str(script), env=env).stdout)

    script = tmp_path / "ppid.py"
    script.write_text("import os\nprint(os.getppid())\n")
    assert parent(base) != os.getpid()  # forked by the zygote
    assert parent({**base, "OMP_NUM_THREADS": "7"}) == os.getpid()  # a fresh interpreter, started here
