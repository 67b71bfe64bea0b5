"""Build framecull's default embedding model: a hand-designed gradient-layout descriptor.

    python models/build_default.py [OUTPUT]

writes daemon/framecull/models_data/default.onnx (the copy the package ships; models/default.onnx
is a symlink to it). The graph has no learned weights: every constant below is written out here,
so the same onnx version writes the same bytes. Needs the `onnx` package (a build-time tool, not a
dependency of the daemon). models/README.md explains the design and the output layout.

What it computes, per frame (input: float32 NCHW [1, 3, 192, 256], raw 0..255 BGR):

1. grey = 0.114 B + 0.587 G + 0.299 R, then log(grey + 16): a change of exposure or gain
   multiplies the picture, and a multiplication becomes an offset that derivatives do not see.
2. Two scales of oriented gradient energy: Gaussian blur (sigma 1 px), central differences
   steered to 0, 45, 90 and 135 degrees, absolute value; the same again on the 2x-downsampled
   picture (a further sigma of 1.5 px there, about 3 px at full size).
3. Average over a 16 x 12 grid of 16 x 16 px cells, minus a small noise floor ("coring": sensor
   and JPEG noise add a near-constant mean |gradient| that carries no information).
4. Per cell, divide the 8 gradient values by (their L2 norm + eps) and add a ninth "flat" value
   eps / (norm + eps): a textured cell is described by the shape of its gradients, whatever its
   contrast; a featureless cell (sky, asphalt, a black frame) by the flat value alone. Every cell
   keeps a norm between 0.7 and 1, so cells can be compared by cosine one by one.
5. Per cell, two log-chroma values, log(R/G) and log(B/G) of the cell's mean colour, minus the
   frame's average (so a white-balance drift that tints the whole frame cancels), times a small
   weight.
6. Per cell, its mean log grey minus the frame's mean log grey, times a weight: a dark car on
   light asphalt changes this even where it adds few edges, while a global gain change cancels.
7. Output: the 16 x 12 cells x 12 channels in cell-major order (row by row, column by column, the
   12 channels of a cell together), flattened and L2-normalised: float32 [1, 2304].
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "daemon" / "framecull" / "models_data" / "default.onnx"

WIDTH, HEIGHT = 256, 192  # model input; 4:3. Frames of other shapes are resized to it.
COLS, ROWS = 16, 12  # the grid: 16 x 16 px cells at the input size
CELL = WIDTH // COLS
LOG_OFFSET = 16.0  # grey levels added before the log: damps the noise of near-black pixels
SIGMA_FINE = 1.0  # px at the input size
SIGMA_COARSE = 1.5  # px at half size
ORIENTATIONS = (0, 45, 90, 135)  # degrees
CORING = (0.006, 0.004)  # fine, coarse: mean |d log grey / dx| left by noise, subtracted per cell
EPS = 0.02  # per-cell normalisation: below this gradient energy a cell counts as flat
CHROMA_OFFSET = 8.0  # grey levels added to each colour channel before the log
CHROMA_WEIGHT = 0.5
INTENSITY_WEIGHT = 1.0
OPSET = 17

CHANNELS = 2 * len(ORIENTATIONS) + 1 + 2 + 1  # gradients, flat, chroma, intensity
DIM = COLS * ROWS * CHANNELS


def gaussian(sigma: float) -> np.ndarray:
    radius = math.ceil(3 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def oriented_derivatives() -> np.ndarray:
    """3x3 central-difference kernels steered to each orientation: [n, 1, 3, 3]."""
    dx = np.array([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]], dtype=np.float64)
    dy = dx.T
    kernels = [math.cos(math.radians(a)) * dx + math.sin(math.radians(a)) * dy for a in ORIENTATIONS]
    return np.array(kernels, dtype=np.float32)[:, None]


class GraphBuilder:
    """Collects nodes and constants; names are generated so the graph reads top to bottom."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, value) -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        output = name or f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def blur(self, x: str, sigma: float, tag: str) -> str:
        """Separable Gaussian with replicated borders (zero padding would add edges at the frame
        border whose strength follows the frame's brightness)."""
        k = gaussian(sigma)
        r = len(k) // 2
        pads = self.const(f"{tag}_pads", np.array([0, 0, r, r, 0, 0, r, r], dtype=np.int64))
        x = self.op("Pad", [x, pads], mode="edge")
        x = self.op("Conv", [x, self.const(f"{tag}_row", k.reshape(1, 1, 1, -1))])
        return self.op("Conv", [x, self.const(f"{tag}_col", k.reshape(1, 1, -1, 1))])

    def gradient_energy(self, x: str, cell: int, scale: float, coring: float, tag: str) -> str:
        """Per-cell mean |oriented derivative| minus the noise floor: [1, n, ROWS, COLS]."""
        pads = self.const(f"{tag}_pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))
        x = self.op("Pad", [x, pads], mode="edge")
        x = self.op("Conv", [x, self.const(f"{tag}_orient", oriented_derivatives())])
        x = self.op("Abs", [x])
        x = self.op("AveragePool", [x], kernel_shape=[cell, cell], strides=[cell, cell])
        x = self.op("Mul", [x, self.const(f"{tag}_scale", np.float32(scale))])
        x = self.op("Sub", [x, self.const(f"{tag}_coring", np.float32(coring))])
        return self.op("Relu", [x])


def build() -> onnx.ModelProto:
    g = GraphBuilder()
    bgr_to_grey = np.array([0.114, 0.587, 0.299], dtype=np.float32).reshape(1, 3, 1, 1)
    grey = g.op("Conv", ["image", g.const("bgr_to_grey", bgr_to_grey)], name="grey")
    grey = g.op("Add", [grey, g.const("log_offset", np.float32(LOG_OFFSET))])
    log_grey = g.op("Log", [grey], name="log_grey")

    fine = g.blur(log_grey, SIGMA_FINE, "blur_fine")
    fine_energy = g.gradient_energy(fine, CELL, 1.0, CORING[0], "fine")
    half = g.op("AveragePool", [fine], kernel_shape=[2, 2], strides=[2, 2])
    coarse = g.blur(half, SIGMA_COARSE, "blur_coarse")
    # half-size derivatives are per 2 px: halve them so both scales are per input pixel
    coarse_energy = g.gradient_energy(coarse, CELL // 2, 0.5, CORING[1], "coarse")
    energy = g.op("Concat", [fine_energy, coarse_energy], axis=1, name="gradient_energy")

    axis1 = g.const("axis1", np.array([1], dtype=np.int64))
    norm = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [energy, energy]), axis1], keepdims=1)])
    denominator = g.op("Add", [norm, g.const("eps", np.float32(EPS))])
    shape = g.op("Div", [energy, denominator], name="gradient_shape")
    flat = g.op("Div", [g.const("eps_numerator", np.float32(EPS)), denominator], name="flat")

    colour = g.op("AveragePool", ["image"], kernel_shape=[CELL, CELL], strides=[CELL, CELL])
    log_colour = g.op("Log", [g.op("Add", [colour, g.const("chroma_offset", np.float32(CHROMA_OFFSET))])])
    # input channels are B, G, R: row 0 = log R - log G, row 1 = log B - log G
    chroma_matrix = np.array([[0, -1, 1], [1, -1, 0]], dtype=np.float32).reshape(2, 3, 1, 1)
    chroma = g.op("Conv", [log_colour, g.const("chroma_matrix", chroma_matrix)])
    chroma_mean = g.op("ReduceMean", [chroma], axes=[2, 3], keepdims=1)
    chroma = g.op("Sub", [chroma, chroma_mean])
    chroma = g.op("Mul", [chroma, g.const("chroma_weight", np.float32(CHROMA_WEIGHT))], name="chroma")

    cell_grey = g.op("AveragePool", [log_grey], kernel_shape=[CELL, CELL], strides=[CELL, CELL])
    grey_mean = g.op("ReduceMean", [cell_grey], axes=[2, 3], keepdims=1)
    intensity = g.op("Sub", [cell_grey, grey_mean])
    intensity = g.op("Mul", [intensity, g.const("intensity_weight", np.float32(INTENSITY_WEIGHT))], name="intensity")

    cells = g.op("Concat", [shape, flat, chroma, intensity], axis=1, name="cells")  # [1, C, ROWS, COLS]
    cells = g.op("Transpose", [cells], perm=[0, 2, 3, 1])  # [1, ROWS, COLS, C]: cell-major
    flat_vector = g.op("Reshape", [cells, g.const("to_row", np.array([1, DIM], dtype=np.int64))])
    length = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [flat_vector, flat_vector]), axis1], keepdims=1)])
    g.op("Div", [flat_vector, length], name="embedding")

    graph = helper.make_graph(
        g.nodes,
        "framecull_default",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, DIM])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="framecull models/build_default.py",
        # not __doc__: editing a comment must not change the model's sha256 (memories key on it)
        doc_string="framecull default embedding: oriented-gradient and intensity layout on a 16x12 grid, see models/README.md",
    )
    model.ir_version = 8  # onnxruntime 1.17 reads IR 8 / opset 17
    helper.set_model_props(
        model,
        {
            "framecull.grid": f"{COLS},{ROWS}",  # (cols, rows); read by framecull.embedder
            "framecull.color": "BGR",
            "framecull.input_range": "0..255",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    data = build().SerializeToString()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    print(f"{output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"input [1,3,{HEIGHT},{WIDTH}] BGR 0..255, embedding [1,{DIM}] = {ROWS} rows x {COLS} cols x {CHANNELS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
