import json
import subprocess
import sys
from pathlib import Path

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


def test_bench_every_round_sets_a_key_in_each_round_and_keeps_the_rest():
    from hiast.cli import load_scenario_every_round
    from hiast.config import ConfigError
    from hiast.scenario import load_scenario
    path = Path(__file__).resolve().parents[1] / "config" / "scenarios" / "synthetic_gta5_to_cityscapes.yaml"
    plain = load_scenario(path)
    fast = load_scenario_every_round(path, ["train.fused_objective=true", "train.workers=1", "pseudo.alpha=0.2"])
    assert len(fast.rounds) == len(plain.rounds) == 3
    for before, after in zip(plain.rounds, fast.rounds):
        assert after.train.fused_objective is True and after.train.workers == 1 and after.pseudo.alpha == 0.2
        assert after.train.lr == before.train.lr                  # the round's own settings stay
    assert load_scenario_every_round(path, []) == plain
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_scenario_every_round(path, ["workers=1"])
    with pytest.raises(ConfigError, match="fused_objectiv"):
        load_scenario_every_round(path, ["train.fused_objectiv=true"])
