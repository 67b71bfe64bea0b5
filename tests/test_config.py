import subprocess
import sys
from pathlib import Path

import pytest

from framecull.config import EX_CONFIG, Config, ConfigError, load_config, parse_duration, to_toml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "examples" / "camera.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framecull", *args], capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cam.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_documents_every_key():
    config = load_config(EXAMPLE)
    assert config.camera == "lot-north"
    text = EXAMPLE.read_text()
    for section, model in [("source", config.source), ("gates.motion_vectors", config.gates.motion_vectors),
                           ("gates.change", config.gates.change), ("gates.novelty", config.gates.novelty),
                           ("gates.novelty.input", config.gates.novelty.input),
                           ("store", config.store), ("service", config.service)]:
        assert f"[{section}]" in text
        for key in type(model).model_fields:
            documented = f"\n{key} =" in text or f"[[{section}.{key}]]" in text or f"[{section}.{key}]" in text
            assert documented, f"{section}.{key} is not in the example"


def test_defaults_fill_a_minimal_file(tmp_path):
    config = load_config(write(tmp_path, 'camera = "gate-1"\n'))
    assert config.gates.change.width == 320
    assert config.gates.change.reference == "last_judged"
    assert config.store_root == Path("/var/lib/framecull/gate-1")


def test_effective_config_round_trips_through_toml(tmp_path):
    config = load_config(EXAMPLE)
    again = load_config(write(tmp_path, to_toml(config)))
    assert again == config


def test_check_config_prints_effective_config(tmp_path):
    result = run_cli("check-config", str(write(tmp_path, 'camera = "x"\n[gates.change]\nthreshold = 30\n')))
    assert result.returncode == 0, result.stderr
    assert "threshold = 30.0" in result.stdout
    assert "min_changed = 0.005" in result.stdout  # a default, filled in


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ('camera = "x"\n[gates.change]\nthresold = 30\n', "gates.change.thresold", "unknown key"),
        ('[gates.change]\nthreshold = 300\n', "gates.change.threshold", "less than or equal to 255"),
        ('[gates.change]\nmin_changed = -0.1\n', "gates.change.min_changed", "greater than or equal to 0"),
        ('[gates.change]\nblur = 4\n', "gates.change.blur", "must be odd"),
        ('[source]\nkind = "webcam"\n', "source.kind", "'picamera2'"),
        ('[[gates.change.masks]]\nname = "sky"\npolygon = [[0.0, 0.0], [1.2, 0.0], [1.0, 0.3]]\n',
         "gates.change.masks.0.polygon.1.0", "less than or equal to 1"),
        ('[[gates.change.masks]]\nname = "sky"\npolygon = [[0.0, 0.0], [1.0, 0.0]]\n',
         "gates.change.masks.0.polygon", "at least 3"),
        ('[store]\nheartbeat = "soon"\n', "store.heartbeat", "not a duration"),
        ('[store]\nmax_bytes = "lots"\n', "store.max_bytes", "byte"),
        ('camera = "lot north/1"\n', "camera", "pattern"),
        ('[gates.change]\nborder = [0.5, 0.0, 0.6, 0.0]\n', "gates.change.border", "leaves nothing"),
    ],
)
def test_bad_config_exits_78_naming_file_key_and_reason(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    result = run_cli("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert str(path) in result.stderr
    assert key in result.stderr
    assert reason in result.stderr


def test_malformed_toml_exits_78(tmp_path):
    path = write(tmp_path, '[gates.change\nthreshold = 3\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "malformed TOML" in result.stderr and str(path) in result.stderr


def test_missing_file_exits_78(tmp_path):
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == EX_CONFIG
    assert "nope.toml: file not found" in result.stderr


def test_replay_with_bad_config_exits_78(tmp_path):
    path = write(tmp_path, '[gates.change]\nwidth = 5\n')
    result = run_cli("replay", str(tmp_path), "--config", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == EX_CONFIG
    assert "gates.change.width" in result.stderr


def test_config_error_is_one_message_per_problem(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[gates.change]\nthreshold = 0\nwidth = 99999\n'))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(str(tmp_path)) for line in lines)


def test_durations_and_sizes(tmp_path):
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration(45) == 45
    config = load_config(write(tmp_path, '[store]\nheartbeat = "30m"\nmax_bytes = "20GB"\n'))
    assert config.store.heartbeat == 1800
    assert config.store.max_bytes == 20_000_000_000


def test_digest_changes_with_thresholds():
    a = Config()
    b = Config.model_validate({"gates": {"change": {"threshold": 30}}})
    assert a.digest() != b.digest() and a.digest() == Config().digest()


def test_check_config_loads_the_novelty_model(tmp_path):
    path = write(tmp_path, f'[gates.novelty]\nmodel = "{tmp_path / "missing.onnx"}"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "gates.novelty.model" in result.stderr and "missing.onnx" in result.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    result = run_cli("check-config", str(write(tmp_path, f'[gates.novelty]\nmodel = "{garbage}"\n')))
    assert result.returncode == EX_CONFIG and "garbage.onnx" in result.stderr
