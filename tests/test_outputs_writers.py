"""Every writer of the product on a FIFO, a symlink to ``/dev/null`` and a target that is neither (a socket, a
directory): ``convert --out``, ``check-data --dump``, ``eval --out``, the report folders, ``merge --output`` and
training's ``--output_dir``. A FIFO is drained by a reader thread and is still a FIFO afterwards; the symlink and
``/dev/null`` are intact; anything else is one line naming it. ``convert --out /dev/stdout`` and ``--out -`` print
the samples on stdout and the summary on stderr, and leave ``/dev/stdout`` as it was."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from convert_fixtures import picture, write_json
from dev_guard import entry
from qwenvl_train.cli import main
from qwenvl_train.outputs import OutputError
from test_outputs import assert_null_link_intact, draining, null_link, unix_socket
from train_fixtures import write_dataset

SHAREGPT = [
    {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "Red."}],
     "images": ["a.png"]},
    {"id": "conv", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
]  # fmt: skip
#: What convert writes for SHAREGPT, the image relative to the output's folder (the working folder for a stream).
SAMPLES = (
    '{"conversations": [{"from": "user", "value": "Picture 1: <img>a.png</img>\\nWhat is it?"}, '
    '{"from": "assistant", "value": "Red."}], "id": "data-0"}\n'
    '{"conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}], "id": "conv"}\n'
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    picture(tmp_path / "a.png", 30, 20)
    return write_json(tmp_path / "data.json", SHAREGPT)


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- convert --out
def test_convert_streams_into_a_fifo(source: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a stream's image paths are relative to the working folder
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with draining(fifo) as got:
        code, out, err = cli(capsys, "convert", "--from", "sharegpt", source, "--out", fifo)
    assert code == 0, err
    assert got == [SAMPLES.encode()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert out.startswith("read 2 record(s) from 1 file(s); wrote 2 sample(s) to ")


def test_convert_writes_through_a_symlink_to_a_device(source: Path, tmp_path: Path, capsys) -> None:
    link = null_link(tmp_path)
    code, _, err = cli(capsys, "convert", "--from", "sharegpt", source, "--out", link)
    assert code == 0, err
    assert_null_link_intact(link)


@pytest.mark.parametrize("kind", ["socket", "directory"])
def test_convert_refuses_any_other_target_in_one_line(
    source: Path, tmp_path: Path, capsys, kind: str
) -> None:
    with unix_socket(tmp_path / "sock") as sock:
        target = sock if kind == "socket" else tmp_path
        code, out, err = cli(capsys, "convert", "--from", "sharegpt", source, "--out", target)
        assert (code, out) == (1, "")
        assert (
            err
            == f"error: --out {target} is a {kind}, not a file: give a file to write (nothing was written)\n"
        )
        assert entry(str(sock)).kind == "socket"


@pytest.mark.parametrize("out", ["/dev/stdout", "-"])
@pytest.mark.parametrize("stdout_is", ["a pipe", "a file"])
def test_convert_out_stdout_prints_the_samples(
    source: Path, tmp_path: Path, out: str, stdout_is: str
) -> None:
    """As a user pipes it (``| head``) or redirects it (``> file``): the samples on stdout, the summary on stderr,
    ``/dev/stdout`` still the symlink it was."""
    before = entry("/dev/stdout")
    command = [
        sys.executable,
        "-m",
        "qwenvl_train",
        "convert",
        "--from",
        "sharegpt",
        str(source),
        "--out",
        out,
    ]
    if stdout_is == "a pipe":
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        printed = done.stdout
    else:
        with open(tmp_path / "redirected.jsonl", "w") as redirected:
            done = subprocess.run(command, cwd=tmp_path, stdout=redirected, stderr=subprocess.PIPE, text=True,
                                  timeout=300)  # fmt: skip
        printed = (tmp_path / "redirected.jsonl").read_text()
    assert done.returncode == 0, done.stderr
    assert printed == SAMPLES
    assert f"read 2 record(s) from 1 file(s); wrote 2 sample(s) to {out}" in done.stderr
    assert entry("/dev/stdout") == before


# ------------------------------------------------------------------------------------------ check-data --dump
@pytest.fixture(scope="module")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n_samples=1, text_only=False)


def test_check_data_dump_into_a_fifo_and_a_device(
    train_data: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with draining(fifo) as got:
        code, out, err = cli(capsys, "check-data", train_data, "--model", tiny_model_dir, "--dump", fifo)
    assert code == 0, out + err
    assert [json.loads(line)["id"] for line in got[0].decode().splitlines()] == ["s0"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = null_link(tmp_path)
    code, out, err = cli(capsys, "check-data", train_data, "--model", tiny_model_dir, "--dump", link)
    assert code == 0 and f"dumped 1 samples to {link}" in out
    assert_null_link_intact(link)


def test_check_data_dump_on_stdout_moves_the_report_to_stderr(
    train_data: Path, tiny_model_dir: Path, capsys
) -> None:
    code, out, err = cli(capsys, "check-data", train_data, "--model", tiny_model_dir, "--dump", "-")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["s0"]
    assert "dumped 1 samples to -" in err


def test_check_data_dump_refuses_a_socket(
    train_data: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    with unix_socket(tmp_path / "sock") as sock:
        code, out, err = cli(capsys, "check-data", train_data, "--model", tiny_model_dir, "--dump", sock)
    assert (code, out) == (1, "")
    assert (
        err == f"error: --dump {sock} is a socket, not a file: give a file to write (nothing was written)\n"
    )


# --------------------------------------------------------------------------------------------------- eval --out
def test_eval_out_into_a_fifo_a_device_and_stdout(
    train_data: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    run = ("eval", "--model", tiny_model_dir, "--data", train_data, "--max-new-tokens", "2", "--out")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with draining(fifo) as got:
        code, out, err = cli(capsys, *run, fifo)
    assert code == 0, err
    assert [s["id"] for s in json.loads(got[0])["samples"]] == ["s0"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert "exact match" in out  # the table stays on stdout: the results went elsewhere
    link = null_link(tmp_path)
    code, _, err = cli(capsys, *run, link)
    assert code == 0, err
    assert_null_link_intact(link)
    code, out, err = cli(capsys, *run, "-")
    assert code == 0, err
    assert [s["id"] for s in json.loads(out)["samples"]] == ["s0"]  # stdout holds the JSON only
    assert "exact match" in err


def test_eval_out_refuses_a_directory_before_loading(train_data: Path, tmp_path: Path, capsys) -> None:
    code, out, err = cli(
        capsys, "eval", "--model", tmp_path / "no-model", "--data", train_data, "--out", tmp_path
    )
    assert (code, out) == (1, "")
    assert (
        err
        == f"error: --out {tmp_path} is a directory, not a file: give a file to write (nothing was written)\n"
    )


# ------------------------------------------------------------------------------- report folders, merge, train
def folder_targets(tmp_path: Path) -> list[tuple[Path, str]]:
    """A FIFO, a symlink to /dev/null and a regular file named as a folder, with what each is said to be."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    file = tmp_path / "file"
    file.write_text("kept\n")
    return [
        (fifo, "a FIFO"),
        (null_link(tmp_path), "a character device (a symlink to it)"),
        (file, "a regular file"),
    ]


def assert_folder_targets_intact(tmp_path: Path) -> None:
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert_null_link_intact(tmp_path / "out")
    assert (tmp_path / "file").read_text() == "kept\n"


def test_report_folders_must_be_folders(
    train_data: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    targets = folder_targets(tmp_path)
    with unix_socket(tmp_path / "sock") as sock:
        for target, said in [*targets, (sock, "a socket")]:
            line = f"error: --report {target} is {said}, not a folder: give a folder to write into\n"
            assert cli(capsys, "check-data", train_data, "--model", tiny_model_dir, "--report", target) == (
                1,
                "",
                line,
            )
            assert cli(capsys, "eval", "--model", tmp_path / "no-model", "--data", train_data, "--report",
                       target) == (1, "", line)  # fmt: skip
    assert_folder_targets_intact(tmp_path)


def test_merge_output_must_be_a_new_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    from qwenvl_train.export.merging import check_request

    targets = folder_targets(tmp_path)
    with unix_socket(tmp_path / "sock") as sock:
        for target, said in [*targets, (sock, "a socket")]:
            with pytest.raises(OutputError) as info:
                check_request(tiny_model_dir, tiny_model_dir, target, None, None, None)
            assert (
                str(info.value) == f"--output {target} is {said}, not a folder: give a folder to write into"
            )
    assert_folder_targets_intact(tmp_path)


def test_training_output_dir_must_be_a_folder(tmp_path: Path) -> None:
    from qwenvl_train.training.preflight import check_output_dir

    targets = folder_targets(tmp_path)
    with unix_socket(tmp_path / "sock") as sock:
        for target, said in [*targets, (sock, "a socket")]:
            with pytest.raises(OutputError) as info:
                check_output_dir(target)
            assert (
                str(info.value)
                == f"--output_dir {target} is {said}, not a folder: give a folder to write into"
            )
    assert_folder_targets_intact(tmp_path)
