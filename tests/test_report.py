"""tftrain.report: the one table writer (Markdown + CSV) and plotting helper."""

import csv

import numpy as np

from tftrain import report


def test_write_table_markdown_and_csv(tmp_path):
  rows = [{'name': 'a', 'acc': 0.91234, 'ratio': 1e-9},
          {'name': 'b', 'acc': None, 'extra': 3}]
  md, csv_path = str(tmp_path / 't.md'), str(tmp_path / 't.csv')
  columns = report.write_table(rows, md, csv_path)
  assert columns == ['name', 'acc', 'ratio', 'extra']
  with open(md) as f:
    lines = f.read().splitlines()
  assert lines == ['| name | acc | ratio | extra |', '|---|---|---|---|',
                   '| a | 0.9123 | 1e-09 |  |', '| b |  |  | 3 |']
  with open(csv_path) as f:
    read = list(csv.DictReader(f))
  assert read[0] == {'name': 'a', 'acc': '0.91234', 'ratio': '1e-09',
                     'extra': ''}
  assert read[1]['extra'] == '3'


def test_column_formats_missing_cells_and_notes(tmp_path):
  rows = [{'variant': 'x', 'lr': 0.002, 'epoch': 3, 'acc': float('nan'),
           'ok': True},
          {'variant': 'y', 'lr': None, 'epoch': None, 'acc': 0.5}]
  text = report.markdown_table(rows, ['variant', 'lr', 'epoch', 'acc', 'ok'],
                               formats={'lr': 'g', 'epoch': 'd',
                                        'acc': '.2f'}, missing='–')
  assert text.splitlines()[2:] == ['| x | 0.002 | 3 | nan | True |',
                                   '| y | – | – | 0.50 | – |']
  money = report.markdown_table([{'n': 1234.5, 'k': 2}], ['n', 'k'],
                                float_format=lambda v: f'{v:,.0f}')
  assert money.splitlines()[-1] == '| 1,234 | 2 |'
  md = str(tmp_path / 't.md')
  report.write_table(rows, md, None, columns=['variant'], notes='\n* note\n')
  with open(md) as f:
    assert f.read() == '| variant |\n|---|\n| x |\n| y |\n\n* note\n'


def test_plot_panels_log_y_with_exact_zeros(tmp_path):
  """An exact 0 on a log axis is drawn, in its curve's colour, on a dotted
  grey floor line a decade below the smallest positive value."""
  from tests import testing  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'p.png')
  depth = np.arange(5)
  report.plot_panels(
      [report.Panel({'sigmoid': (depth, [0.0, 1e-8, 1e-4, 1e-2, 0.4]),
                     'selu': (depth, [60, 20, 8, 3, 2])}, 'start', 'depth',
                    'norm', logy=True),
       report.Panel({'sigmoid': (depth, [1e-9] * 5)}, 'end', logy=True)],
      path, suptitle='t')
  pixels = testing.read_png(path).astype(int)
  height, width, _ = pixels.shape
  assert height >= 300 and width >= 2 * height
  near = lambda rgb, tol=3: (np.abs(pixels - rgb) <= tol).all(-1)
  blue, orange = near((31, 119, 180)), near((255, 127, 14))   # tab10 C0, C1
  left, right = slice(0, width // 2), slice(width // 2, width)
  # Not blank: both curves in the first panel, only sigmoid's in the second.
  assert blue[:, left].sum() > 300 and orange[:, left].sum() > 300
  assert blue[:, right].sum() > 300 and orange[:, right].sum() == 0
  # The floor: a dotted grey line across the first panel's axes only (the
  # second panel has no zeros).
  grey = near((128, 128, 128), 2)
  y_floor = int(grey[:, left].sum(1).argmax())
  assert grey[y_floor, left].sum() >= 30
  assert grey[:, right].sum(1).max() < 10
  xs = np.flatnonzero(grey[y_floor, left])
  x_lo, x_hi = int(xs.min()), int(xs.max())          # the axes' width
  assert x_hi - x_lo > width // 4
  # depth 0 sits at 0.2 / 4.4 of the axes' width (matplotlib's 5% margins):
  # the zero is drawn there, on the floor, in sigmoid's colour ...
  x0 = int(round(x_lo + (x_hi - x_lo) * 0.2 / 4.4))
  assert blue[y_floor - 4:y_floor + 5, x0 - 4:x0 + 5].sum() >= 8
  # ... and nothing of sigmoid's is drawn below the floor.
  assert blue[y_floor + 6:, x_lo:x_hi].sum() == 0


def test_plot_panels_styles_clip_and_figure_legend(tmp_path, monkeypatch):
  plt = report.pyplot()
  import matplotlib  # pylint: disable=g-import-not-at-top
  assert matplotlib.get_backend().lower() == 'agg'
  saved = {}
  monkeypatch.setattr(plt, 'close', lambda fig: saved.setdefault('fig', fig))
  epochs = [1, 2, 3]
  path = report.plot_panels(
      [report.Panel({'a': (epochs, [1.0, 0.9, 0.8]),
                     'b': (epochs, [1.1, None, 1e6])}, ylabel='loss',
                    clip=True)],
      str(tmp_path / 'c.png'), 'title', styles={'a': (0, '-'), 'b': (0, '--')},
      legend_columns=2)
  assert path.endswith('c.png') and (tmp_path / 'c.png').stat().st_size > 1000
  fig = saved['fig']
  ax = fig.axes[0]
  assert [l.get_linestyle() for l in ax.get_lines()] == ['-', '--']
  assert ax.get_lines()[0].get_color() == ax.get_lines()[1].get_color()
  assert ax.get_ylim()[1] < 10          # the diverging point is clipped off
  assert [t.get_text() for t in fig.legends[0].get_texts()] == ['a', 'b']
  assert ax.get_legend() is None
