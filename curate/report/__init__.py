"""Views of a workspace: the HTML curation report, matplotlib plots and notebook views.

- :mod:`curate.report.html`: the self-contained report page (:func:`build_report`), and :func:`report_view` showing
  it in a notebook.
- :mod:`curate.report.sections`: its sections (pool, judges and cost, failures, selections) as HTML.
- :mod:`curate.report.summary`: what those show, as data (reason codes, failure codes, row values).
- :mod:`curate.report.plots`: matplotlib figures (``scales``: their bins and jitter).
- :mod:`curate.report.views`: notebook ``_repr_html_`` views and the data behind ``curate info``.
- :mod:`curate.report.tables`: HTML building blocks and the stylesheet (``assets/report.css``).
"""

from curate.report.html import build_report, report_html, report_view

__all__ = ["build_report", "report_html", "report_view"]
