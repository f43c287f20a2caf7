"""The model repository's contract: its layout, what each model's ``config.pbtxt`` says, and its lock.

Why a package of its own, in the core and without torch: the writer
(``export.configs``), the export-side readers (hot-swap, ``show``, the int8
tools) and the Python-backend runtime inside Triton (``serving.triton_models``)
all need the same names and parameters, and must agree on them. Each model's
parameters are a dataclass here with one ``parameters()`` (what the writer
writes) and one ``from_config`` (the parser back, from a ``config.pbtxt`` read
with Triton's protobuf or the JSON dict the Python backend receives).

Modules, top to bottom: ``reader`` (a repository read once) and ``lock``;
``params`` (the dataclasses); ``files`` (``config.pbtxt`` to the JSON form);
``layout`` (names); ``errors``. Nothing is imported here, so the Python-backend
stub loads only ``params`` and what it needs.
"""
