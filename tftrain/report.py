"""Comparison outputs: one table writer (Markdown + CSV), one plotting helper.

`write_table` / `markdown_table` serve every comparison (grids, the
activation study, benchmarks); `plot_panels` draws every curve figure, with
log-y zeros and outlier clipping handled here once; `pyplot()` is the one
place the matplotlib backend is chosen ('Agg': files only, no display), and
`figure_png` turns a figure into PNG bytes (image summaries, the heatmap).
"""

import csv
import dataclasses
import math
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

Curve = Tuple[Sequence[float], Sequence[float]]
Format = Union[str, Callable[[Any], str]]   # a format spec or value -> text


def pyplot():
  """`matplotlib.pyplot` on the 'Agg' backend (set here and nowhere else)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def figure_png(fig) -> bytes:
  """The figure as PNG bytes; closes it."""
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  pyplot().close(fig)
  return buf.getvalue()


# ---------------------------------------------------------------- tables --

def _cell(value, spec: Optional[Format], missing: str) -> str:
  if value is None:
    return missing
  if isinstance(value, float) and math.isnan(value):
    return 'nan'
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if spec is None or not number:
    return str(value)
  return spec(value) if callable(spec) else format(value, spec)


def columns_of(rows: Sequence[Mapping[str, Any]]) -> List[str]:
  """The keys of `rows` in first-seen order."""
  return list(dict.fromkeys(k for row in rows for k in row))


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Optional[Sequence[str]] = None,
                   formats: Optional[Mapping[str, Format]] = None,
                   float_format: Format = '.4g', missing: str = '') -> str:
  """`rows` (dicts) as a Markdown table (no trailing newline).

  `columns`: default: keys in first-seen order; a missing key or None is the
  text `missing`. `formats`: column -> format spec ('.4f', 'd') or function,
  for numbers; `float_format` for floats of the other columns.
  """
  columns = list(columns or columns_of(rows))
  formats = formats or {}
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  for row in rows:
    cells = []
    for c in columns:
      value = row.get(c)
      spec = formats.get(c, float_format if isinstance(value, float) else None)
      cells.append(_cell(value, spec, missing))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def write_table(rows: Sequence[Mapping[str, Any]], path_md: Optional[str],
                path_csv: Optional[str], columns: Optional[Sequence[str]] = None,
                notes: str = '', **markdown) -> List[str]:
  """Writes `rows` as Markdown (`markdown_table` + `notes`) and as CSV (values
  in full); a None path is skipped. Returns the column names used.
  """
  columns = list(columns or columns_of(rows))
  if path_md:
    with open(path_md, 'w') as f:
      f.write(markdown_table(rows, columns, **markdown) + '\n' + notes)
  if path_csv:
    with open(path_csv, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
      writer.writeheader()
      for row in rows:
        writer.writerow({c: '' if row.get(c) is None else row.get(c)
                         for c in columns})
  return columns


# ----------------------------------------------------------------- plots --

@dataclasses.dataclass
class Panel:
  """One subplot: `curves` maps a label to (x, y); None/NaN y is a gap."""
  curves: Mapping[str, Curve]
  title: str = ''
  xlabel: str = ''
  ylabel: str = ''
  logy: bool = False
  # Log-y only: y <= 0 is drawn at this floor with an 'x' (None: a decade
  # below the smallest positive y); `floor_label` explains it in the legend.
  floor: Optional[float] = None
  floor_label: str = 'exactly 0'
  # Linear y: cap the axis at median + 3 x (median - min) so one diverging
  # curve does not flatten the others.
  clip: bool = False


def _draw_log(ax, panel: Panel, color, marker) -> None:
  values = [v for _, y in panel.curves.values()
            for v in np.asarray(y, np.float64).ravel() if np.isfinite(v) and v > 0]
  floor = panel.floor or (min(values) / 10 if values else 1e-30)
  floored = False
  for name, (x, y) in panel.curves.items():
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    zero = y <= 0
    ax.semilogy(x, np.where(zero, floor, y), color=color(name), label=name,
                **marker(x))
    if zero.any():
      ax.semilogy(x[zero], np.full(zero.sum(), floor), 'x', ms=5,
                  color=color(name))
      floored = True
  if floored:
    ax.axhline(floor, color='grey', ls=':', lw=1)
    ax.plot([], [], 'kx', label=f'{panel.floor_label} (drawn at {floor:.0e})')


def _draw_linear(ax, panel: Panel, color, marker, dashes) -> None:
  for name, (x, y) in panel.curves.items():
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ax.plot(x, y, dashes.get(name, '-'), color=color(name), label=name,
            **marker(x))
  values = sorted(v for _, y in panel.curves.values()
                  for v in np.asarray(y, np.float64).ravel() if np.isfinite(v))
  if panel.clip and values:
    low, median = values[0], values[len(values) // 2]
    top = min(values[-1], median + 3 * (median - low))
    pad = 0.05 * (top - low) + 1e-6
    ax.set_ylim(low - pad, top + pad)


def plot_panels(panels: Sequence[Panel], path: str, suptitle: str = '',
                styles: Optional[Mapping[str, Tuple[int, str]]] = None,
                legend_columns: int = 0,
                panel_size: Tuple[float, float] = (6.0, 4.2)) -> str:
  """Draws the panels side by side into the PNG `path`; returns `path`.

  `styles`: label -> (colour index, line style); default: a colour per label,
  solid. `legend_columns`: 0: a legend per panel; else one below the figure.
  """
  plt = pyplot()
  names = columns_of([p.curves for p in panels])
  styles = styles or {n: (i, '-') for i, n in enumerate(names)}
  cmap = plt.get_cmap('tab10' if len({c for c, _ in styles.values()}) <= 10
                      else 'tab20')
  color = lambda n: cmap(styles[n][0] % cmap.N)
  marker = lambda x: dict(lw=1.8, marker='o' if len(x) < 30 else None, ms=4)
  dashes = {n: s for n, (_, s) in styles.items()}
  fig, axes = plt.subplots(1, len(panels), squeeze=False, dpi=100,
                           figsize=(panel_size[0] * len(panels), panel_size[1]))
  for ax, panel in zip(axes[0], panels):
    if panel.logy:
      _draw_log(ax, panel, color, marker)
    else:
      _draw_linear(ax, panel, color, marker, dashes)
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, which='major', alpha=0.3)
    if not legend_columns:
      ax.legend(fontsize=8, loc='best')
  rect = (0, 0, 1, 1)
  if legend_columns:
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=legend_columns,
               fontsize=8, frameon=False)
    rect = (0, 0.04 + 0.035 * -(-len(labels) // legend_columns), 1, 1)
  if suptitle:
    fig.suptitle(suptitle, fontsize=12)
  fig.tight_layout(rect=rect)
  fig.savefig(path)
  plt.close(fig)
  return path
