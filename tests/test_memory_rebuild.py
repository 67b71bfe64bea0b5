"""`framecull memory rebuild`: kept frames re-embedded in place with the configured model, on real
JPEGs, SQLite files and FAISS indexes in tmp_path; what the novelty gate's lighting test needs
(each kept frame's mean grey level) survives it."""

from __future__ import annotations

import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

from framecull.embedder import Embedder, default_model_spec
from framecull.frame import Frame
from framecull.memory import Memory, ModelMismatch
from framecull.sources.synthetic import parking_lot
from framecull.thumbnails import thumbnail

CAPACITY, FOREVER = 100_000, 0.0
WIDTH = 320  # the analysis width
OLD, NEW = "0" * 64, "1" * 64  # model hashes
SCENE = parking_lot(seed=0)  # quiet 0-79, a car arrives 80-108 and parks in bay 3


def old_model(image: np.ndarray) -> np.ndarray:
    """A real, if crude, embedding: the 8 x 4 grey thumbnail (32-d)."""
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (8, 4), interpolation=cv2.INTER_AREA).ravel() + 1.0


def new_model(image: np.ndarray) -> np.ndarray:
    """Another one: the 4 x 4 colour thumbnail (48-d)."""
    return cv2.resize(image, (4, 4), interpolation=cv2.INTER_AREA).ravel().astype(np.float32) + 1.0


def light_of(image: np.ndarray) -> float:
    """The mean grey level exactly as the novelty gate measures it: its frame's analysis plane."""
    return float(Frame.from_bgr(0, 0.0, image, WIDTH).gray.mean())


def keep(memory: Memory, root, name: str, image: np.ndarray, time: float, light: float | None) -> int:
    """A kept frame as the store and the novelty gate leave it: a JPEG under frames/ and a memory row."""
    (root / "frames").mkdir(exist_ok=True)
    assert cv2.imwrite(str(root / "frames" / name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return memory.add(old_model(image), time, f"frames/{name}", 0.05, None, light)


@pytest.fixture
def old_memory(tmp_path):
    """Three scenes kept with the old model, their lights recorded; the third's image pulled away."""
    images = [SCENE.render(0), SCENE.render(120), (SCENE.render(40) * 0.5).astype(np.uint8)]
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER) as memory:
        ids = [keep(memory, tmp_path, f"{n}.jpg", image, 1000.0 + n, light_of(image))
               for n, image in enumerate(images)]
    (tmp_path / "frames" / "2.jpg").unlink()  # rsync --remove-source-files
    return tmp_path, ids, images


def test_rebuild_re_embeds_in_place_and_keeps_each_frames_light(old_memory, caplog):
    root, ids, images = old_memory
    with Memory(root, OLD, 32, CAPACITY, FOREVER) as memory:
        lights = memory.get_light(ids)
        before = memory.export(root / "before.npz")
    assert None not in lights and before == 3
    with pytest.raises(ModelMismatch):
        Memory(root, NEW, 48, CAPACITY, FOREVER)

    with Memory(root, NEW, 48, CAPACITY, FOREVER, rebuild=True) as memory:
        assert len(memory) == 0  # the old embeddings cannot be compared with the new model's
        with pytest.raises(RuntimeError, match="reembed"):
            memory.add(new_model(images[0]), 2000.0, "frames/x.jpg", 0.05, None)
        assert memory.reembed(new_model, WIDTH) == (2, 1)
        assert len(memory) == 2
        assert memory.get_light(ids[:2]) == lights[:2]
        for n in range(2):
            on_disk = cv2.imread(str(root / "frames" / f"{n}.jpg"))
            assert memory.search(new_model(on_disk))[0] == (ids[n], pytest.approx(0.0, abs=1e-3))
        with pytest.raises(KeyError):
            memory.get_vectors(ids[2:])  # its image was gone: forgotten

    with caplog.at_level(logging.WARNING), Memory(root, NEW, 48, CAPACITY, FOREVER) as memory:
        assert len(memory) == 2 and memory.get_light(ids) == [*lights[:2], None]
        assert memory.stats()["model_sha256"] == NEW
        memory.export(root / "after.npz")
    assert "rebuilding" not in caplog.text, "the rebuilt index was not saved"
    old, new = np.load(root / "before.npz"), np.load(root / "after.npz")
    for key in ("ids", "times", "files", "thresholds", "nearest_ids"):
        assert list(new[key]) == list(old[key][:2]), key
    with pytest.raises(ModelMismatch):
        Memory(root, OLD, 32, CAPACITY, FOREVER)


def test_a_missing_light_is_measured_from_the_image_and_nothing_pulled_is_forgotten(tmp_path):
    """Rows an older rebuild left without a light get it back; with the model unchanged, rebuild
    re-embeds nothing and forgets no frame, even one whose image was pulled away."""
    images = [SCENE.render(0), SCENE.render(120)]
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER) as memory:
        ids = [keep(memory, tmp_path, f"{n}.jpg", image, 1000.0 + n, None) for n, image in enumerate(images)]
        pulled = keep(memory, tmp_path, "pulled.jpg", SCENE.render(40), 1002.0, None)
    (tmp_path / "frames" / "pulled.jpg").unlink()
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER, rebuild=True) as memory:
        assert memory.reembed(old_model, WIDTH) == (0, 0)
        assert len(memory) == 3
        expected = [light_of(cv2.imread(str(tmp_path / "frames" / f"{n}.jpg"))) for n in range(2)]
        assert memory.get_light([*ids, pulled]) == [*expected, None]


def test_an_interrupted_rebuild_changes_nothing(old_memory):
    root, ids, _ = old_memory
    with Memory(root, OLD, 32, CAPACITY, FOREVER) as memory:
        lights, vectors = memory.get_light(ids), memory.get_vectors(ids)

    def fails_on_the_second(image: np.ndarray) -> np.ndarray:
        fails_on_the_second.calls += 1
        if fails_on_the_second.calls == 2:
            raise RuntimeError("killed")
        return new_model(image)

    fails_on_the_second.calls = 0
    with Memory(root, NEW, 48, CAPACITY, FOREVER, rebuild=True) as memory:
        with pytest.raises(RuntimeError, match="killed"):
            memory.reembed(fails_on_the_second, WIDTH)
    with pytest.raises(ModelMismatch):
        Memory(root, NEW, 48, CAPACITY, FOREVER)
    with Memory(root, OLD, 32, CAPACITY, FOREVER) as memory:
        assert len(memory) == 3 and memory.get_light(ids) == lights
        assert np.array_equal(memory.get_vectors(ids), vectors)
        assert memory.search(vectors[1])[0][0] == ids[1]


def test_cli_rebuild_keeps_the_lights(tmp_path):
    """End to end: a memory of another model, `framecull memory rebuild --root`, then the memory of
    the shipped model holds every frame still on disk with its light."""
    images = [SCENE.render(0), SCENE.render(120), (SCENE.render(0) * 0.5).astype(np.uint8)]
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER) as memory:
        ids = [keep(memory, tmp_path, f"{n}.jpg", image, 1000.0 + n, light_of(image))
               for n, image in enumerate(images)]
        lights = memory.get_light(ids)
    result = subprocess.run([sys.executable, "-m", "framecull", "memory", "rebuild", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 frames" in result.stdout and "3 re-embedded, 0 forgotten" in result.stdout
    embedder = Embedder(default_model_spec())
    with Memory(tmp_path, embedder.sha256, embedder.dim, CAPACITY, FOREVER, grid=embedder.grid) as memory:
        assert len(memory) == 3
        assert memory.get_light(ids) == lights and None not in lights
        # the darker copy of the first scene: half its light, as the lighting test will see it
        assert lights[2] == pytest.approx(lights[0] / 2, rel=0.05)
        on_disk = cv2.imread(str(tmp_path / "frames" / "1.jpg"))
        assert memory.search(embedder.embed(on_disk))[0] == (ids[1], pytest.approx(0.0, abs=1e-3))


def darker_is_kept(root) -> list:
    """The decisions on the remembered scene and then a darker version of it (a new lighting state)."""
    from framecull.config import Config
    from framecull.runner import Collect, Runner

    bright = SCENE.render(0)
    frames = [Frame.from_bgr(0, 2000.0, bright, WIDTH), Frame.from_bgr(1, 2010.0, (bright * 0.6).astype(np.uint8), WIDTH)]
    decisions = Collect()
    with Runner(Config.model_validate({"pacing": {"min_interval": 0}}), root, write=False, sinks=[decisions]) as runner:
        runner.run(frames)
    return decisions.decisions


def test_after_a_rebuild_a_darker_version_of_a_remembered_scene_is_still_kept(tmp_path):
    bright = SCENE.render(0)
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER) as memory:
        keep(memory, tmp_path, "0.jpg", bright, 1000.0, light_of(bright))
    result = subprocess.run([sys.executable, "-m", "framecull", "memory", "rebuild", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    same, darker = darker_is_kept(tmp_path)
    assert not same.kept and same.stage == "novelty", "the remembered scene itself is not kept again"
    assert darker.kept and darker.stage == "novelty"
    novelty = darker.scores["novelty"]
    assert novelty["light"] > 0.2 and novelty["distance"] < 0.05, "kept for its light, not its look"


def test_without_its_light_a_remembered_scene_hides_its_darker_version(tmp_path):
    """The control: a row without a light (what the old rebuild left) switches the lighting test off."""
    embedder = Embedder(default_model_spec())
    with Memory(tmp_path, embedder.sha256, embedder.dim, CAPACITY, FOREVER, grid=embedder.grid) as memory:
        memory.add(embedder.embed(SCENE.render(0)), 1000.0, "frames/0.jpg", 0.05, None, None)
    same, darker = darker_is_kept(tmp_path)
    assert not same.kept and not darker.kept


def test_rebuild_keeps_the_thumbnails_of_kept_stills(tmp_path):
    image = SCENE.render(120)
    (tmp_path / "frames").mkdir()
    assert cv2.imwrite(str(tmp_path / "frames" / "0.jpg"), image)
    with Memory(tmp_path, OLD, 32, CAPACITY, FOREVER) as memory:
        kept = memory.add(old_model(image), 1000.0, "frames/0.jpg", 0.05, None, light_of(image), thumbnail(image))
    with Memory(tmp_path, NEW, 48, CAPACITY, FOREVER, rebuild=True) as memory:
        assert memory.reembed(new_model, WIDTH) == (1, 0)
    with Memory(tmp_path, NEW, 48, CAPACITY, FOREVER) as memory:
        assert memory.get_thumbs([kept]) == [thumbnail(image)]
