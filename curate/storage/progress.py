"""curate's progress bars: tqdm.auto (a widget in Jupyter, text in a terminal), imported quietly."""

from __future__ import annotations


def _quiet_tqdm_auto():
    """``tqdm.auto``, imported without its TqdmWarning: in a kernel without ipywidgets (no ``notebook`` extra)
    it falls back to text bars, which is what we want, silently. Imported here, when the workspace module
    loads, so datasets/huggingface_hub (which import it too) find it already imported and warn nothing."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


_quiet_tqdm_auto()


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "row"):
    """curate's progress bar (tqdm.auto: a widget in Jupyter, text in a terminal); ``total`` None: set it later."""
    tqdm = _quiet_tqdm_auto()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, dynamic_ncols=True,
                mininterval=0.5)
