"""Defaults shared by export, training and the demo, in one place.

``DEFAULT_DEPTHS``: where the frozen trunk branches. MiniLM-L6 has 6 layers; the
trunk runs up to the deepest branch depth and every head reads one of them.
The value comes from the GLUE study in ``reports/glue.md`` (training package):
searching k in {3, 4} and student layers in {1, 2} under a 35% layer budget, every
task chose k = 3 on validation (depth 4 had cost CoLA most of its score), so the
trunk runs three layers. A deployment can expose several depths (``--depths 3,4``);
the trunk then runs to the deepest.
"""

DEFAULT_DEPTHS = (3,)
DEFAULT_MAX_SEQ_LEN = 128
DEFAULT_BUCKETS = (16, 32, 64, 128)
ONNX_OPSET = 17
