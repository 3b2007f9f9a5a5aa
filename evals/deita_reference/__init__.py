"""DEITA's own filter code (hkust-nlp/deita, Apache-2.0), copied for benchmarking curate's admission loop.

Files: ``base.py`` (``IterativeFilter``, verbatim), ``combined_filter.py`` (``Combined_Filter``, its
imports pointed here), ``pipeline_utils.py`` (``sort_key_split``), ``LICENSE`` (DEITA's Apache-2.0 text).
Source: https://github.com/hkust-nlp/deita at commit b279f2c329b403d2612a61e270c8d2a2eeaed6f4.
Not part of the curate package; used only by ``evals/bench_admission.py``.
"""
