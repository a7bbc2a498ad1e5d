"""The merge explorer's widgets (ipywidgets): a method dropdown and parameter sliders; each change
merges the family in memory, evaluates, and redraws the by-level figure in place."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd

from l2s_kit.analysis import by_level, model_summary, plots
from l2s_kit.study.explorer import Explorer, model_name
from l2s_kit.study.setup import REFERENCE


def slider_methods() -> list[str]:
    """The methods the explorer offers by default: those whose every float parameter declares
    where to search it (a slider each), that merge one model into the base (System 2 into
    System 1) and wrap no other merge."""
    from l2s_kit.merging import list_methods

    return [m.name for m in list_methods() if not m.wraps and m.n_models[0] == 1 and all(
        p.search is not None for p in m.params.values() if p.type is float)]


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def _chosen(method: str, controls: dict) -> tuple[str, dict]:
    """The method and the parameters its sliders give (in the method's order; a parameter with
    choices only when it is not the default)."""
    from l2s_kit.merging import get_method

    own = get_method(method).params
    return method, {n: _round(controls[n].value) for n, p in own.items() if n in controls
                    and (p.search is not None or controls[n].value != p.default)}


def _status_line(s, seconds: float) -> str:
    """One model's summary row as the widget's status line."""
    return (f"<b>{s.model}</b>: accuracy {s.accuracy:.1f}% "
            f"({s.accuracy_change:+.1f} points against System 2), "
            f"{s.mean_tokens:.1f} tokens ({s.length_change:+.1f}%), "
            f"reflective {100 * s.reflection_ratio:.0f}% ({seconds:.1f} s)")


def explorer_widget(ex: Explorer, method: str, methods: Sequence[str] | None = None, **params):
    """Sliders and a dropdown for the method (starting at ``method``; the others offered:
    ``methods``, or :func:`slider_methods`) and its parameters (``params``: their first values);
    each change merges, evaluates and redraws the by-level figure in place. Returns the
    ipywidgets box (its ``.figure_output`` holds the figure, ``.status`` the last result)."""
    import ipywidgets as w
    from IPython.display import display

    from l2s_kit.merging import get_method

    methods = list(methods or slider_methods())
    if method not in methods:
        methods.insert(0, method)
    dropdown = w.Dropdown(options=methods, value=method, description="method")
    controls = _controls([method, *methods], params)  # the first method's controls first
    status = w.HTML()
    out = w.Output()
    base = ex.compare()  # System 1 and System 2, evaluated once

    held = [False]

    def refresh(*_):
        if held[0]:
            return
        m, p = _chosen(dropdown.value, controls)
        own = get_method(m).params
        for n, c in controls.items():
            c.layout.display = "" if n in own else "none"
        status.value = f"merging and evaluating {model_name(m, p)} …"
        t = time.perf_counter()
        df = pd.concat([base, ex.responses(m, **p)], ignore_index=True)
        s = model_summary(df, reference=REFERENCE, keep=("method", "parameters")).iloc[-1]
        fig = plots.level_panels(by_level(df), title=f"{model_name(m, p)} against System 1 and 2")
        with out:
            out.clear_output(wait=True)
            display(fig)
        box.summary = s
        status.value = _status_line(s, time.perf_counter() - t)

    def switch(change):
        """A parameter the new method shares with the old one keeps its slider's value; one it
        adds starts at the new method's default (or the value given to this call)."""
        old, new = get_method(change["old"]).params, get_method(change["new"]).params
        held[0] = True  # one merge for the switch, not one per slider set here
        try:
            for n, p in new.items():
                if n in controls and n not in old:
                    controls[n].value = params.get(n, p.default)
        finally:
            held[0] = False
        refresh()

    dropdown.observe(switch, "value")
    for c in controls.values():
        c.observe(refresh, "value")
    box = w.VBox([w.HBox([dropdown, *controls.values()], layout=w.Layout(flex_flow="row wrap")),
                  status, out])
    box.controls, box.method, box.figure_output, box.status = controls, dropdown, out, status
    refresh()
    return box


def _controls(methods: Sequence[str], params: dict) -> dict:
    """One control per parameter name of ``methods``: a slider over the method's own search
    interval, a dropdown for a parameter with choices; first values from ``params``, else the
    first method's default."""
    import ipywidgets as w

    from l2s_kit.merging import get_method

    controls: dict[str, w.Widget] = {}
    for m in methods:
        for name, p in get_method(m).params.items():
            value = params.get(name, p.default)
            if name in controls:
                continue
            if p.search is not None:
                lo, hi, step = p.search.lo, p.search.hi, p.search.step
                controls[name] = w.FloatSlider(value=value, min=lo, max=hi, step=step,
                                               description=name, continuous_update=False,
                                               readout_format=".2f")
            elif p.choices:
                controls[name] = w.Dropdown(options=list(p.choices), value=value,
                                            description=name)
    return controls
