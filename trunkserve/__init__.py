"""trunkserve: one frozen BERT trunk, many small task heads, served by Triton.

The package holds the pieces every other part of the bundle agrees on: the BERT
building blocks (``bert``), how a backbone checkpoint is found and loaded
(``backbone``), the trunk/head split (``modules``), the trunk fingerprint
(``fingerprint``), the self-describing head artefact (``artifacts``), the graph
specs that name tensors for ONNX and Triton alike (``specs``) and the bucketing
tokenizer used by the server (``tokenization``).
"""

__version__ = "0.1.0"
