"""Embedder with real onnxruntime sessions: the shipped default model, a real pretrained
SqueezeNet from ../shared/testdata, and small graphs built here with onnx.helper."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from framecull.embedder import Embedder, ModelSpec, cell_distances, default_model_spec, grid_cells
from framecull.frame import fit

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
SQUEEZENET = TESTDATA / "models" / "squeezenet1.1_fp16.onnx"
KITTEN = TESTDATA / "models" / "kitten_224.png"
CAR_VIDEO = TESTDATA / "videos" / "intel_car-detection.mp4"


def needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not there (../shared/testdata beside the repo holds it; see its SOURCES.md)")


@pytest.fixture(scope="module")
def default() -> Embedder:
    return Embedder(default_model_spec())


def textured_scene(seed: int = 1, size=(640, 360)) -> np.ndarray:
    """A fixed-camera-like BGR scene: mottled asphalt, lane marks, kerb, a building, a tree."""
    w, h = size
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0)
    blotches = cv2.resize(rng.normal(0, 1, (h // 40, w // 40)).astype(np.float32), (w, h),
                          interpolation=cv2.INTER_CUBIC)
    grey = 95 + 12 * grain / grain.std() + 10 * blotches
    image = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2).astype(np.uint8)
    for x in range(40, w, 110):  # parking bay lines
        cv2.line(image, (x, int(h * 0.35)), (x + 30, h), (225, 225, 225), 4)
    cv2.rectangle(image, (0, 0), (w, int(h * 0.3)), (150, 140, 130), -1)  # a building
    for x in range(20, w, 60):  # its windows
        cv2.rectangle(image, (x, 20), (x + 30, 70), (90, 70, 60), -1)
    cv2.rectangle(image, (0, int(h * 0.3)), (w, int(h * 0.34)), (180, 180, 175), -1)  # a kerb
    cv2.circle(image, (int(w * 0.85), int(h * 0.2)), 40, (40, 110, 50), -1)  # a tree
    return image


def paste_car(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A car seen from above: red body, dark windscreen and rear window, in box (x, y, w, h)."""
    out = image.copy()
    x, y, w, h = box
    cv2.rectangle(out, (x, y), (x + w, y + h), (40, 40, 170), -1)
    cv2.rectangle(out, (x + w // 5, y + h // 8), (x + 4 * w // 5, y + 3 * h // 8), (40, 30, 30), -1)
    cv2.rectangle(out, (x + w // 5, y + 6 * h // 8), (x + 4 * w // 5, y + 7 * h // 8), (40, 30, 30), -1)
    return out


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b)


def noisy_jpeg(image: np.ndarray, sigma: float, quality: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    noisy = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def brighter(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


# -- the default model ------------------------------------------------------------------------


def test_default_model_shape_and_metadata(default):
    assert default_model_spec().path.is_file()
    assert (default.width, default.height) == (256, 192)
    assert default.dim == 2304 and default.grid == (16, 12)
    assert default.sha256 == hashlib.sha256(default_model_spec().path.read_bytes()).hexdigest()
    assert default_model_spec().path.stat().st_size < 50_000
    # the grid also comes from the model's metadata when the spec does not give it
    spec = default_model_spec()
    spec.grid = None
    assert Embedder(spec).grid == (16, 12)


def test_committed_model_is_what_the_build_script_makes():
    onnx = pytest.importorskip("onnx", reason="building the default model needs the onnx package")
    loader = importlib.util.spec_from_file_location("build_default", REPO / "models" / "build_default.py")
    build_default = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(build_default)
    built = build_default.build()
    shipped = onnx.load(default_model_spec().path)
    # compared as protobuf messages, so another onnx version's byte order cannot fail it
    assert built == shipped, "the shipped model is stale: run python models/build_default.py"
    onnx.checker.check_model(shipped, full_check=True)
    assert (REPO / "models" / "default.onnx").resolve() == default_model_spec().path.resolve()


def test_default_embedding_is_normalised_and_deterministic(default):
    scene = textured_scene()
    a = default.embed(scene)
    assert a.dtype == np.float32 and a.shape == (2304,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(a, default.embed(scene.copy()))
    assert np.array_equal(a, Embedder(default_model_spec()).embed(scene))
    assert distance(a, default.embed(cv2.flip(scene, 0))) > 0.05  # another layout, another vector


def test_uniform_frames_have_a_well_defined_embedding(default):
    """A black or uniformly grey frame (lens covered, night) must not be a zero vector, else
    every such frame would be 'novel'; all of them map to the same all-flat embedding."""
    black = default.embed(np.zeros((360, 640, 3), np.uint8))
    grey = default.embed(np.full((360, 640, 3), 128, np.uint8))
    assert np.linalg.norm(black) == pytest.approx(1.0, abs=1e-5)
    assert distance(black, grey) < 1e-5
    assert distance(black, default.embed(textured_scene())) > 0.5


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_global_brightness_change_barely_moves_the_embedding(default, factor):
    scene = textured_scene()
    a, b = default.embed(scene), default.embed(brighter(scene, factor))
    # measured: 0.0001 (x0.7) and 0.0003 (x1.3, with clipped highlights)
    assert distance(a, b) < 0.003
    assert cell_distances(a, b, default.grid).max() < 0.02


@pytest.mark.parametrize("size", [(640, 360), (256, 192)])  # the second: no averaging by the resize
def test_sensor_noise_and_jpeg_barely_move_the_embedding(default, size):
    scene = textured_scene(size=size)
    a, b = default.embed(scene), default.embed(noisy_jpeg(scene, sigma=3, quality=75))
    assert distance(a, b) < 0.003  # measured: 0.0001 at 640x360, 0.0003 at 256x192
    assert cell_distances(a, b, default.grid).max() < 0.02


def cells_touched(box, image_size, grid) -> np.ndarray:
    """[rows, cols] mask of the grid cells a box (x, y, w, h) overlaps."""
    (w, h), (cols, rows) = image_size, grid
    x, y, bw, bh = box
    mask = np.zeros((rows, cols), bool)
    mask[int(y * rows / h):int(np.ceil((y + bh) * rows / h)), int(x * cols / w):int(np.ceil((x + bw) * cols / w))] = True
    return mask


@pytest.mark.parametrize("box", [(200, 200, 112, 62), (470, 140, 62, 112)])
def test_a_small_object_moves_its_cells_far_more_than_the_rest(default, box):
    """A car of 3% of the frame: the whole-frame distance stays modest, the cells under the
    car move a lot, the others hardly at all."""
    scene = textured_scene()
    assert box[2] * box[3] / (640 * 360) == pytest.approx(0.03, abs=0.001)
    a, b = default.embed(scene), default.embed(paste_car(scene, box))
    cells = cell_distances(a, b, default.grid)
    under = cells_touched(box, (640, 360), default.grid)
    # measured (16x12 grid): whole frame 0.015 / 0.012; cells under the car up to 0.55 / 0.53;
    # every other cell < 0.008 (the dark car shifts the frame's mean grey, which each cell's
    # intensity channel is relative to)
    assert cells[under].max() > 0.3
    assert cells[~under].max() < 0.02
    assert cells[under].max() > 30 * cells[~under].max()
    assert 0.002 < distance(a, b) < 0.05


def test_cell_helpers_follow_the_documented_layout():
    vector = np.arange(8 * 6 * 11, dtype=np.float32)  # any grid: 8 x 6 cells of 11 channels here
    cells = grid_cells(vector, (8, 6))
    assert cells.shape == (6, 8, 11)
    assert cells[1, 2, 3] == (1 * 8 + 2) * 11 + 3  # row 1, column 2, channel 3
    other = vector.copy()
    other[(4 * 8 + 5) * 11:(4 * 8 + 6) * 11] *= -1  # flip the cell at row 4, column 5
    d = cell_distances(vector, other, (8, 6))
    assert d[4, 5] == pytest.approx(2.0) and np.count_nonzero(d > 1e-6) == 1


def test_real_car_entering_an_empty_lot(default):
    """Real frames: two empty-lot frames are near-identical, a car changes a few cells a lot."""
    needs(CAR_VIDEO)
    capture = cv2.VideoCapture(str(CAR_VIDEO))
    frames = {}
    for index in range(81):
        ok, frame = capture.read()
        assert ok, f"cannot decode frame {index} of {CAR_VIDEO}"
        if index in (10, 40, 80):
            frames[index] = default.embed(frame)
    capture.release()
    quiet = cell_distances(frames[10], frames[40], default.grid)
    car = cell_distances(frames[10], frames[80], default.grid)
    assert distance(frames[10], frames[40]) < 0.002 and quiet.max() < 0.05
    assert distance(frames[10], frames[80]) > 0.05 and (car > 0.3).sum() >= 4


# -- bring your own model: SqueezeNet 1.1 fp16, real ImageNet weights -------------------------


def squeezenet(**kwargs) -> Embedder:
    needs(SQUEEZENET)
    return Embedder(ModelSpec(path=SQUEEZENET, **kwargs))


@pytest.mark.parametrize("color, mean", [("BGR", (104.0, 117.0, 123.0)), ("BGR", (0.0, 0.0, 0.0)), ("RGB", (0.0, 0.0, 0.0))])
def test_squeezenet_known_answer_tabby_cat(color, mean):
    needs(KITTEN)
    model = squeezenet(output="softmaxout_1", color=color, mean=mean)
    assert (model.width, model.height, model.dim) == (224, 224, 1000)
    assert model.sha256 == "21f25e3d9254af93e6218a359469fac714a017b3f9035c0f5c4acbf9a3ff7233"
    kitten = cv2.imread(str(KITTEN), cv2.IMREAD_COLOR)
    assert int(np.argmax(model.embed(kitten))) == 281  # ImageNet "tabby cat"


def test_squeezenet_internal_tensor_is_pooled_and_normalised():
    needs(KITTEN)
    model = squeezenet(output="fire9/concat_1", mean=(104.0, 117.0, 123.0))
    assert model.dim == 512 and model.grid is None
    kitten = cv2.imread(str(KITTEN), cv2.IMREAD_COLOR)
    vector = model.embed(kitten)
    assert vector.dtype == np.float32 and vector.shape == (512,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert distance(vector, model.embed(cv2.resize(kitten, (640, 480)))) < 0.05  # any frame size
    assert distance(vector, model.embed(textured_scene())) > 0.1


# -- bring your own model: the errors a user can make -----------------------------------------


@pytest.mark.parametrize("spec_kwargs, message", [
    ({"input_name": "image"}, "no input named 'image'.*data_0"),
    ({"output": "no_such_tensor"}, "no tensor named 'no_such_tensor'"),
    ({"size": (320, 240)}, r"size \(320, 240\) does not match input shape"),
    ({"layout": "NHWC"}, "224 channels where NHWC needs 3"),
    ({"dtype": "float32"}, "dtype float32 does not match input 'data_0', which is float16"),
    ({"output": "softmaxout_1", "grid": (7, 7)}, "not a grid of 7 x 7 cells"),
])
def test_squeezenet_spec_errors_name_the_model_and_the_problem(spec_kwargs, message):
    needs(SQUEEZENET)
    with pytest.raises(ValueError, match=message) as error:
        Embedder(ModelSpec(path=SQUEEZENET, **spec_kwargs))
    assert str(SQUEEZENET) in str(error.value)


def test_missing_and_non_onnx_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model file not found") as missing:
        Embedder(ModelSpec(path=tmp_path / "nope.onnx"))
    assert str(tmp_path / "nope.onnx") in str(missing.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 50)
    with pytest.raises(ValueError, match="not an ONNX model") as bad:
        Embedder(ModelSpec(path=junk))
    assert str(junk) in str(bad.value)


def tiny_model(path: Path, shape: list, op: str, **attrs) -> Path:
    """A one-node graph over an image input "x"."""
    onnx = pytest.importorskip("onnx", reason="building test graphs needs the onnx package")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_preprocessing_nhwc_rgb_scale_mean_std_known_answer(tmp_path):
    """Channel means of a solid frame, after the spec's preprocessing, are known exactly."""
    path = tiny_model(tmp_path / "nhwc.onnx", [1, "height", "width", 3], "ReduceMean", axes=[1, 2], keepdims=0)
    with pytest.raises(ValueError, match="no fixed size"):
        Embedder(ModelSpec(path=path, layout="NHWC"))
    model = Embedder(ModelSpec(path=path, layout="NHWC", size=(64, 48), color="RGB", scale=1 / 255,
                               mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 1.0)))
    assert model.preprocess(np.zeros((360, 640, 3), np.uint8)).shape == (1, 48, 64, 3)
    frame = np.empty((360, 640, 3), np.uint8)
    frame[:] = (30, 102, 204)  # B, G, R
    raw = (np.array([204, 102, 30]) / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.25, 0.5, 1.0])
    np.testing.assert_allclose(model.embed(frame), raw / np.linalg.norm(raw), atol=1e-5)


@pytest.mark.parametrize("layout, shape", [("NCHW", [1, 3, 24, 32]), ("NHWC", [1, 24, 32, 3])])
def test_feature_map_output_is_global_average_pooled(tmp_path, layout, shape):
    model = Embedder(ModelSpec(path=tiny_model(tmp_path / "map.onnx", shape, "Identity"), layout=layout))
    assert model.dim == 3
    frame = np.empty((24, 32, 3), np.uint8)
    frame[:, :16] = (10, 20, 40)
    frame[:, 16:] = (30, 20, 0)  # channel means: 20, 20, 20
    np.testing.assert_allclose(model.embed(frame), np.full(3, 3 ** -0.5), atol=1e-6)


def test_output_without_batch_axis_is_refused(tmp_path):
    path = tiny_model(tmp_path / "nobatch.onnx", [1, 3, 8, 8], "Squeeze")  # [3, 8, 8]
    with pytest.raises(ValueError, match="expected batch 1 first") as error:
        Embedder(ModelSpec(path=path))
    assert str(path) in str(error.value)


# -- models/export_torch.py -------------------------------------------------------------------


def test_export_torch_script_makes_a_model_the_embedder_runs(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (optional: models/export_torch.py only)")
    loader = importlib.util.spec_from_file_location("export_torch", REPO / "models" / "export_torch.py")
    export_torch = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(export_torch)
    import torch

    backbone = export_torch.tiny_backbone()
    path = export_torch.export(backbone, tmp_path / "tiny.onnx", size=(160, 120))
    model = Embedder(ModelSpec(path=path, color="RGB"))
    assert (model.width, model.height, model.dim) == (160, 120, 32)
    scene = textured_scene()
    vector = model.embed(scene)
    # the same frame through torch gives the same embedding
    rgb = cv2.cvtColor(fit(scene, 160, 120), cv2.COLOR_BGR2RGB)  # the embedder's own resize
    with torch.no_grad():
        expected = export_torch.PixelsToEmbedding(backbone)(torch.from_numpy(rgb).float().permute(2, 0, 1)[None])
    np.testing.assert_allclose(vector, expected[0].numpy(), atol=1e-5)
