"""Paths and numbers the user gave: one line, exit 2, nothing written (issue 32, items 3-4).

The tests run as root, for whom every folder is writable, so a read-only folder is simulated
at the one seam that asks (``faults._writable``); a real read-only mount answers the same.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ssl_biases.cli import main
from ssl_biases.run import export as export_module
from ssl_biases.run import faults

from helpers import fit_args


def run_main(args: list[str], capsys) -> str:
    """``ssl-biases ARGS``: asserts exit 2 and a one-line error; returns that line."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("ssl-biases: error: "), err  # + the debug hint
    assert "Traceback" not in "".join(err)
    return err[0]


def read_only(monkeypatch, *folders: Path) -> None:
    blocked = {folder.resolve() for folder in folders}
    monkeypatch.setattr(faults, "_writable", lambda folder: folder.resolve() not in blocked)


def test_export_onto_an_existing_file_or_into_a_read_only_folder(tmp_path, capsys, monkeypatch):
    target = tmp_path / "backbone.bin"
    target.write_bytes(b"keep me")
    line = run_main(["export", "--ckpt", str(tmp_path / "x.ckpt"), "--output", str(target)], capsys)
    assert f"--output {target}: {target} is a file, not a folder" in line
    assert target.read_bytes() == b"keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(monkeypatch, locked)
    out = locked / "export"
    line = run_main(["export", "--ckpt", str(tmp_path / "x.ckpt"), "--output", str(out)], capsys)
    assert f"cannot write into {locked} (read-only or no permission)" in line
    assert not out.exists()


def test_fit_into_a_read_only_default_root_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(monkeypatch, locked)
    line = run_main([*fit_args("simclr", tmp_path), f"--trainer.default_root_dir={locked}"], capsys)
    assert f"--trainer.default_root_dir {locked}: cannot write into {locked}" in line
    assert list(locked.iterdir()) == [] and not (tmp_path / "runs").exists()


def test_resume_of_a_read_only_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "ssl" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    read_only(monkeypatch, run)
    line = run_main([*fit_args("simclr", tmp_path), "--ckpt_path=last"], capsys)
    assert f"--ckpt_path last continues {Path('runs/ssl/version_0')}, but" in line
    assert "cannot write into" in line
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "last.ckpt"]  # no status


def test_any_permission_error_on_a_path_is_one_line(tmp_path, capsys, monkeypatch):
    def denied(ckpt, output):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(output) / "x.json"))

    monkeypatch.setattr(export_module, "export_checkpoint", denied)
    out = tmp_path / "out"
    line = run_main(["export", "--ckpt", "x.ckpt", "--output", str(out)], capsys)
    assert line == (
        f"ssl-biases: error: cannot write {out / 'x.json'}: Permission denied; name a path you "
        "can write to, or change its permissions."
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trainer.max_steps=-5"], "--trainer.max_steps -5: give a number of steps >= 0, or -1"),
        (["--trainer.max_epochs=-2"], "--trainer.max_epochs -2: give a number of epochs >= 0"),
    ],
    ids=["max_steps", "max_epochs"],
)
def test_a_negative_bound_names_the_flag(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expected in run_main([*fit_args("simclr", tmp_path), *args], capsys)
    assert not (tmp_path / "runs").exists()


def test_backbones_with_image_size_0_says_the_minimum(capsys):
    line = run_main(["backbones", "--image-size", "0", "--names", "vit_tiny"], capsys)
    assert "image_size must be at least 8 pixels, got 0" in line
