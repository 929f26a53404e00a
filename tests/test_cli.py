import json
import subprocess
import sys

import pytest

from hiast.cli import build_parser, main

from fixtures import write_gta5


def test_every_subcommand_says_what_it_reads_and_writes():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        if name == "bench":
            benches = next(a for a in subparser._actions if a.dest == "bench")
            for bench_name, bench in benches.choices.items():
                assert "Reads" in bench.format_help(), f"bench {bench_name}"
            continue
        text = subparser.format_help()
        assert "Reads" in text and "Writ" in text, name


def test_generate_writes_a_complete_marker(tmp_path):
    root = tmp_path / "syn"
    counts = ["--count", "gta5=1", "--count", "synthia=1", "--count", "cityscapes_train=1", "--count",
              "cityscapes_val=1", "--count", "oxford_train=1", "--count", "oxford_val=1"]
    assert main(["generate", "--root", str(root), "--height", "32", "--width", "64", "--workers", "1"] + counts) == 0
    marker = json.loads((root / ".complete").read_text())
    assert marker["seed"] == 0
    with pytest.raises(SystemExit, match="--count 'nope=1'"):
        main(["generate", "--root", str(root), "--count", "nope=1"])


def test_stage_errors_are_one_line_messages_not_tracebacks(tmp_path):
    manifest = tmp_path / "m.csv"
    (tmp_path / "bad.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "hiast", "eval", "--config", '{"rounds": [{"pseudo": {"alpah": 1}}]}',
                             "--manifest", str(manifest), "--model", "a=b.pt", "--output", str(tmp_path / "e.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--config.rounds[0].pseudo.alpah: unknown key; did you mean 'alpha'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_manifest_error_exit_code(tmp_path, capsys):
    root = write_gta5(tmp_path / "GTA5")
    (root / "labels" / "00001.png").unlink()
    assert main(["manifest", "gta5", str(root), str(tmp_path / "m.csv")]) == 2
    assert "image without label" in capsys.readouterr().err
