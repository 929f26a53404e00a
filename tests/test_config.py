from dataclasses import dataclass

import pytest

from hiast import config
from hiast.config import ConfigError, build, field


@dataclass(frozen=True)
class Inner:
    alpha: float = field(0.5, low=0, high=1, low_open=True)
    policy: str = field("IAS", choices=("IAS", "CBST", "CT", "NT"))


@dataclass(frozen=True)
class Outer:
    iterations: int = field(10, low=0)
    size: tuple[int, int] = (4, 8)
    inner: Inner = field(default_factory=Inner)
    rounds: tuple[Inner, ...] = ()

    def validate(self):
        if self.size[0] > self.size[1]:
            raise ConfigError("size: height must not exceed width")


def test_defaults_and_nested_values():
    cfg = build(Outer, {"iterations": 3, "inner": {"alpha": 1}, "rounds": [{}, {"policy": "CT"}]})
    assert cfg.iterations == 3 and cfg.inner.alpha == 1.0 and isinstance(cfg.inner.alpha, float)
    assert cfg.rounds == (Inner(), Inner(policy="CT")) and cfg.size == (4, 8)
    assert config.to_dict(cfg)["rounds"][1] == {"alpha": 0.5, "policy": "CT"}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"cfg\.inner\.alpah: unknown key; did you mean 'alpha'\?"):
        build(Outer, {"inner": {"alpah": 0.3}}, "cfg")
    with pytest.raises(ConfigError, match=r"cfg\.zzz: unknown key; known keys"):
        build(Outer, {"zzz": 1}, "cfg")


@pytest.mark.parametrize("mapping, message", [
    ({"inner": {"alpha": 0}}, r"cfg\.inner\.alpha: 0\.0 is out of range; expected a value in \(0, 1\]"),
    ({"inner": {"alpha": 1.5}}, r"cfg\.inner\.alpha: 1\.5 is out of range"),
    ({"iterations": -1}, r"cfg\.iterations: -1 is out of range; expected a value in \[0, inf\]"),
    ({"iterations": 2.5}, r"cfg\.iterations: expected an integer"),
    ({"iterations": True}, r"cfg\.iterations: expected an integer"),
    ({"inner": {"policy": "XX"}}, r"cfg\.inner\.policy: 'XX' is not allowed; expected one of"),
    ({"size": [1, 2, 3]}, r"cfg\.size: expected 2 values"),
    ({"rounds": [{"alpha": -1}]}, r"cfg\.rounds\[0\]\.alpha"),
    ({"size": [9, 8]}, r"cfg\.size: height must not exceed width"),
])
def test_bad_values_name_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, mapping, "cfg")


def test_load_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        config.load_yaml(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        config.load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        config.load_yaml(tmp_path / "list.yaml")
    # safe_load: python object tags are refused
    (tmp_path / "obj.yaml").write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_yaml(tmp_path / "obj.yaml")


def test_merge():
    assert config.merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 5}, "d": [1]}) == {"a": {"b": 5, "c": 2}, "d": [1]}
