"""ONNX model adapter: a BGR frame in, one L2-normalised float32 embedding out.

Any image model onnxruntime can run will do; ModelSpec says how to feed it (input name, size,
layout, dtype, colour order, scaling) and which tensor to read. See models/README.md for the
model contract and for the layout of grid embeddings such as the default model's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnxruntime as ort

from framecull.frame import BadPicture, fit

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


@dataclass
class ModelSpec:
    """How to feed a model and what to read from it ([gates.novelty] model settings).

    x = (pixel * scale - mean) / std, per channel, in the model's colour order.
    """

    path: Path
    input_name: str | None = None  # None: the graph's only input
    size: tuple[int, int] | None = None  # (width, height); None: from the graph's input shape
    layout: Literal["NCHW", "NHWC"] = "NCHW"  # also the layout of a spatial output
    dtype: Literal["float32", "float16"] | None = None  # None: from the graph
    color: Literal["BGR", "RGB"] = "BGR"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str | None = None  # a graph output, or an internal tensor to expose; None: first output
    grid: tuple[int, int] | None = None  # (cols, rows) of a grid embedding; None: model metadata
    # onnxruntime's graph optimizations: "all" adds layout changes (NCHWc on x86), which pay off
    # for convolutional networks and cost more than they save on a small graph.
    optimization: Literal["extended", "all"] = "all"


def default_model_spec() -> ModelSpec:
    """The shipped hand-designed model (models/build_default.py)."""
    path = Path(str(resources.files("framecull") / "models_data" / "default.onnx"))
    return ModelSpec(path=path, input_name="image", size=(256, 192), dtype="float32",
                     color="BGR", output="embedding",  # grid: from the model metadata
                     optimization="extended")  # 0.51 ms a picture against 0.82 with "all" (x86, one thread)


class Embedder:
    def __init__(self, spec: ModelSpec, threads: int = 1) -> None:
        self.spec = spec
        self.path = Path(spec.path)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{self.path}: model file not found") from None
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot read the model: {exc}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if spec.optimization == "extended"
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        options.log_severity_level = 3  # onnxruntime's warnings about unused initializers etc.
        self._options = options
        self._session = self._open(data)
        outputs = [o.name for o in self._session.get_outputs()]
        if spec.output is not None and spec.output not in outputs:
            self._session = self._open(self._expose(data, spec.output))
        self._output = spec.output or outputs[0]
        self._configure_input()
        self.dim = int(self._run(np.zeros((self.height, self.width, 3), np.uint8)).size)
        self._probe()
        self.grid = spec.grid or self._metadata_grid()
        if self.grid is not None:
            cols, rows = self.grid
            if cols < 1 or rows < 1 or self.dim % (cols * rows):
                raise ValueError(f"{self.path}: an embedding of {self.dim} values is not a grid of "
                                 f"{cols} x {rows} cells (dim must be a multiple of {cols * rows})")

    def _fail(self, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {problem}")

    def _open(self, data: bytes) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(data, self._options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise self._fail(f"not an ONNX model onnxruntime can run: {exc}") from None

    def _expose(self, data: bytes, name: str) -> bytes:
        """The model with an internal tensor added to the graph outputs."""
        try:
            import onnx
        except ImportError:
            raise self._fail(f"{name!r} is not a graph output; reading an internal tensor needs "
                             "the 'onnx' package (pip install onnx)") from None
        model = onnx.load_from_string(data)
        produced = {out for node in model.graph.node for out in node.output}
        if name not in produced:
            outputs = [o.name for o in model.graph.output]
            raise self._fail(f"no tensor named {name!r} (graph outputs: {outputs}; "
                             "internal tensors are node output names, e.g. from Netron)")
        model.graph.output.append(onnx.ValueInfoProto(name=name))
        return model.SerializeToString()

    def _configure_input(self) -> None:
        spec = self.spec
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        if spec.input_name is None:
            if len(inputs) != 1:
                raise self._fail(f"the model has {len(inputs)} inputs {names}; say which one is the image")
            node = inputs[0]
        else:
            matches = [i for i in inputs if i.name == spec.input_name]
            if not matches:
                raise self._fail(f"no input named {spec.input_name!r} (inputs: {names})")
            node = matches[0]
        self._input = node.name

        shape = list(node.shape)
        if len(shape) != 4:
            raise self._fail(f"input {node.name!r} has shape {shape}; an image input needs 4 dims ({spec.layout})")
        channels, height, width = shape[1:] if spec.layout == "NCHW" else (shape[3], shape[1], shape[2])
        if isinstance(channels, int) and channels != 3:
            raise self._fail(f"input {node.name!r} has shape {shape}: {channels} channels where "
                             f"{spec.layout} needs 3 (is the layout right?)")
        fixed = (width, height) if isinstance(width, int) and isinstance(height, int) else None
        if spec.size is not None:
            if fixed is not None and tuple(spec.size) != fixed:
                raise self._fail(f"size {tuple(spec.size)} does not match input shape {shape} "
                                 f"(width {width}, height {height})")
            self.width, self.height = spec.size
        elif fixed is not None:
            self.width, self.height = fixed
        else:
            raise self._fail(f"input {node.name!r} has no fixed size {shape}; give size = [width, height]")

        graph_dtype = _DTYPES.get(node.type)
        if graph_dtype is None:
            raise self._fail(f"input {node.name!r} is {node.type}; only float32 and float16 inputs are supported")
        if spec.dtype is not None and spec.dtype != graph_dtype:
            raise self._fail(f"dtype {spec.dtype} does not match input {node.name!r}, which is {graph_dtype}")
        self._dtype = np.dtype(graph_dtype)

        self._affine = (spec.scale != 1.0 or any(spec.mean) or any(s != 1.0 for s in spec.std))
        self._mean = np.asarray(spec.mean, np.float32)
        self._std = np.asarray(spec.std, np.float32)

    def _probe(self) -> None:
        """Refuse a model that cannot tell pictures apart: NaN or infinite output, or the same output
        for two very different pictures (with it the novelty gate would keep everything, or nothing)."""
        h, w = self.height, self.width
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
        stripes = np.zeros((h, w, 3), np.float32)
        stripes[(np.arange(h) // max(1, h // 8)) % 2 == 1] = 255
        a, b = (self._run(picture.astype(np.uint8)) for picture in (ramp, stripes))
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise self._fail("its output holds NaN or infinite values: it cannot compare pictures")
        if np.allclose(a, b, rtol=1e-4, atol=1e-6):
            raise self._fail("its output is the same for very different pictures (a constant): it cannot "
                             "compare pictures; is `output` the right tensor?")

    def _metadata_grid(self) -> tuple[int, int] | None:
        value = self._session.get_modelmeta().custom_metadata_map.get("framecull.grid")
        if not value:
            return None
        try:
            cols, rows = (int(part) for part in value.split(","))
        except ValueError:
            raise self._fail(f"metadata framecull.grid = {value!r} is not 'cols,rows'") from None
        return cols, rows

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape (h, w, 3), got {image_bgr.shape}")
        image_bgr = fit(image_bgr, self.width, self.height)
        if self.spec.color == "RGB":
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        x = image_bgr.astype(np.float32)
        if self._affine:
            x = (x * np.float32(self.spec.scale) - self._mean) / self._std
        if self.spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None], dtype=self._dtype)

    def _run(self, image_bgr: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output], {self._input: self.preprocess(image_bgr)})[0]
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 0 or out.shape[0] != 1:
            raise self._fail(f"output {self._output!r} has shape {out.shape}; expected batch 1 first")
        out = out[0]
        if out.ndim == 3:  # a feature map: global average pool
            out = out.mean(axis=(1, 2)) if self.spec.layout == "NCHW" else out.mean(axis=(0, 1))
        elif out.ndim != 1:
            raise self._fail(f"output {self._output!r} has shape (1, {', '.join(map(str, out.shape))}); "
                             "expected [1, D] or a feature map [1, C, h, w]")
        return out

    def embed(self, image_bgr: np.ndarray) -> np.ndarray:
        """float32 [dim], L2-normalised (an all-zero output stays zero). BadPicture when the model
        gives NaN or infinite values for this picture (it passed the probe at start, so the picture
        is the problem, not the model: the frame is dropped, the run goes on)."""
        vector = self._run(image_bgr)
        if not np.isfinite(vector).all():
            raise BadPicture(f"{self.path.name} gives NaN or infinite values for this picture: it cannot be compared")
        length = float(np.linalg.norm(vector))
        return vector / length if length > 0 else vector


def grid_cells(vector: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A grid embedding as [rows, cols, channels] (cells are stored row by row, channels together)."""
    cols, rows = grid
    return np.asarray(vector).reshape(rows, cols, -1)


def cell_distances(a: np.ndarray, b: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Cosine distance in [0, 2] between matching cells of two grid embeddings: [rows, cols]."""
    a, b = grid_cells(a, grid), grid_cells(b, grid)
    dot = (a * b).sum(axis=-1)
    lengths = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.clip(1.0 - dot / np.maximum(lengths, 1e-12), 0.0, 2.0)
