"""Training for trunkserve: GLUE/custom data, partial fine-tuning teachers, distilled students.

Following Wei, Qi and He (ACL 2022): per task, the bottom ``k`` layers of BERT are
frozen and shared (the trunk); a teacher fine-tunes the top ``n`` layers, and a
smaller student head distilled from it is what gets served. Because the trunk is
frozen, its hidden states are computed once per example (``cache``) and every
teacher, student and search candidate trains on them.

Entry points: ``training.pipeline.train_heads`` and ``training.study.run_report`` (library; their
keywords are the fields of ``training.options``) and ``python -m trunkserve.training
train-heads|demo|report|hidden-ablation|render`` (CLI, generated from the same fields).
"""
