"""Defaults shared by export, training and the demo, in one place.

``DEFAULT_DEPTHS``: where the frozen trunk branches. MiniLM-L6 has 6 layers; the
trunk runs up to the deepest branch depth and every head reads one of them.
The values come from the GLUE study in ``reports/glue.md`` (training package):
most tasks do best distilled at depth 4, CoLA needs depth 3 with a two-layer head,
and exposing depth 3 costs no extra layer (the trunk runs to 4 either way).
"""

DEFAULT_DEPTHS = (3, 4)
DEFAULT_MAX_SEQ_LEN = 128
DEFAULT_BUCKETS = (16, 32, 64, 128)
ONNX_OPSET = 17
