import re
import subprocess
import sys
from pathlib import Path

import pytest

from framecull.config import (EX_CONFIG, ChangeConfig, Config, ConfigError, Section, load_config, parse_duration,
                              to_toml)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "examples" / "camera.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framecull", *args], capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cam.toml"
    path.write_text(text)
    return path


HEADER = re.compile(r"^\[\[?([^\]]+)\]\]?(?:  # (.*))?$")


def blocks(text: str) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """TOML text -> the lines under each table header ("" = top level), and each header's comment."""
    lines: dict[str, list[str]] = {"": []}
    notes: dict[str, str | None] = {}
    current = ""
    for line in text.splitlines():
        header = HEADER.match(line)
        if header:
            current = header.group(1)
            lines.setdefault(current, [])
            notes[current] = header.group(2)
        else:
            lines[current].append(line)
    return lines, notes


def sections(config: Config):
    """(table name, model) of every table of the config, nested ones included."""

    def walk(model: Section, prefix: str):
        for key in type(model).model_fields:
            value = getattr(model, key)
            if isinstance(value, Section):
                yield prefix + key, value
                yield from walk(value, f"{prefix}{key}.")

    return walk(config, "")


def test_example_config_is_valid_and_documents_every_key():
    config = load_config(EXAMPLE)
    assert config.camera == "lot-north"
    text = EXAMPLE.read_text()
    lines, _ = blocks(text)
    assert re.search(r"^camera = .*#", text, re.M), "camera is not documented in the example"
    for section, model in [("source", config.source), ("regions", config.regions), ("lighting", config.lighting),
                           ("gates.motion_vectors", config.gates.motion_vectors),
                           ("gates.change", config.gates.change), ("gates.novelty", config.gates.novelty),
                           ("gates.novelty.input", config.gates.novelty.input), ("pacing", config.pacing),
                           ("budget", config.budget), ("store", config.store), ("service", config.service)]:
        assert section in lines, f"[{section}] is not in the example"
        for key in type(model).model_fields:
            if isinstance(getattr(model, key), (Section, list)) and f"{section}.{key}" in lines:
                continue  # a sub-table or an array of tables: [section.key] / [[section.key]]
            line = next((line for line in lines[section] if line.startswith(f"{key} = ")), None)
            assert line is not None, f"{section}.{key} is not in the [{section}] section of the example"
            assert "#" in line, f"{section}.{key} has no comment in the example"
    # Those tables and no others (nothing left over from the old layout, such as [[gates.change.masks]]).
    tables = {name for name, _ in sections(config)} - {"gates"}  # [gates] holds only tables
    assert set(lines) - {""} == tables | {"regions.masks"}


def test_every_key_has_a_description():
    missing = [f"{name}.{key}" for name, model in [("", Config())] + list(sections(Config()))
               for key, field in type(model).model_fields.items() if not field.description]
    assert not missing, f"keys without description=: {missing}"


def test_defaults_fill_a_minimal_file(tmp_path):
    config = load_config(write(tmp_path, 'camera = "gate-1"\n'))
    assert config.source.analysis_width == 320
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


def test_check_config_explains_every_key(tmp_path):
    path = write(tmp_path, 'camera = "x"\n[gates.change]\nthreshold = 30\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    description = ChangeConfig.model_fields["min_changed"].description
    assert "a frame is a candidate" in description
    assert f"min_changed = 0.005  # {description}\n" in result.stdout
    lines, notes = blocks(result.stdout)
    config = load_config(path)
    for name, model in [("", config)] + list(sections(config)):
        for key, field in type(model).model_fields.items():
            if isinstance(getattr(model, key), Section):
                table = f"{name}.{key}".lstrip(".")
                assert notes[table] == field.description, f"[{table}] is not explained"
                continue
            line = next((line for line in lines[name] if line.startswith(f"{key} = ")), None)
            assert line is not None, f"{name}.{key} is not printed"
            assert line.endswith(f"  # {field.description}"), f"{name}.{key} is not explained: {line}"


@pytest.mark.parametrize("text", ['camera = "x"\n', None], ids=["defaults", "example"])
def test_check_config_output_round_trips(tmp_path, text):
    path = EXAMPLE if text is None else write(tmp_path, text)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    assert load_config(printed) == load_config(path)
    if text is None:
        assert "[[regions.masks]]" in result.stdout


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ('camera = "x"\n[gates.change]\nthresold = 30\n', "gates.change.thresold", "unknown key"),
        ('[gates.change]\nthreshold = 300\n', "gates.change.threshold", "less than or equal to 255"),
        ('[gates.change]\nmin_changed = -0.1\n', "gates.change.min_changed", "greater than or equal to 0"),
        ('[gates.change]\nblur = 4\n', "gates.change.blur", "must be odd"),
        ('[source]\nkind = "webcam"\n', "source.kind", "'picamera2'"),
        ('[[regions.masks]]\nname = "sky"\npolygon = [[0.0, 0.0], [1.2, 0.0], [1.0, 0.3]]\n',
         "regions.masks.0.polygon.1.0", "less than or equal to 1"),
        ('[[regions.masks]]\nname = "sky"\npolygon = [[0.0, 0.0], [1.0, 0.0]]\n',
         "regions.masks.0.polygon", "at least 3"),
        ('[pacing]\nheartbeat = "soon"\n', "pacing.heartbeat", "not a duration"),
        ('[pacing]\nmin_interval = -1\n', "pacing.min_interval", "negative"),
        ('[budget]\nmax_bytes = "lots"\n', "budget.max_bytes", "byte"),
        ('[budget]\nmax_per_hour = -1\n', "budget.max_per_hour", "greater than or equal to 0"),
        ('[lighting]\nmin_change = 11\n', "lighting.min_change", "less than or equal to 10"),
        ('[source]\nanalysis_width = 16\n', "source.analysis_width", "greater than or equal to 32"),
        ('camera = "lot north/1"\n', "camera", "pattern"),
        ('[regions]\nborder = [0.5, 0.0, 0.6, 0.0]\n', "regions.border", "leaves nothing"),
        # the old places of moved keys are refused, not silently ignored
        ('[gates.change]\nwidth = 320\n', "gates.change.width", "unknown key"),
        ('[gates.change]\nlight_change = 0.2\n', "gates.change.light_change", "unknown key"),
        ('[[gates.change.masks]]\nname = "sky"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.3]]\n',
         "gates.change.masks", "unknown key"),
        ('[gates.novelty]\nmin_interval = "1s"\n', "gates.novelty.min_interval", "unknown key"),
        ('[store]\nheartbeat = "30m"\n', "store.heartbeat", "unknown key"),
        ('[store]\nmax_bytes = "20GB"\n', "store.max_bytes", "unknown key"),
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
    path = write(tmp_path, '[source]\nanalysis_width = 5\n')
    result = run_cli("replay", str(tmp_path), "--config", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == EX_CONFIG
    assert "source.analysis_width" in result.stderr


def test_config_error_is_one_message_per_problem(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[source]\nanalysis_width = 99999\n[gates.change]\nthreshold = 0\n'))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(str(tmp_path)) for line in lines)


def test_durations_and_sizes(tmp_path):
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration(45) == 45
    config = load_config(write(tmp_path, '[pacing]\nheartbeat = "30m"\nmin_interval = "2s"\n'
                                         '[budget]\nmax_bytes = "20GB"\n'))
    assert config.pacing.heartbeat == 1800 and config.pacing.min_interval == 2
    assert config.budget.max_bytes == 20_000_000_000


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
