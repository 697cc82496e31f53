"""The report's PNG figures (matplotlib, the optional `reproduce` extra).

- `errors.png` (tables): per row, the paper's error beside ours at the best and the last epoch.
- `differences.png` (tables, once cells have the seeds for intervals): per row, each computed
  last-epoch difference with its 95% interval, beside 0.
- `figure2.png`: peer diversity per epoch, one panel per architecture, a line per method.
- `figure3.png`: error against the group size, a line per method, the paper's points marked.
- `curves_<row>.png`: test accuracy per epoch of every cell of a row (the leader, the students'
  mean and the ensembles, the line the table reports highlighted), the mean over the seeds that
  reached each epoch.

Curves come from each seed's `curves` in the results (its history's test values per epoch), so a
seed taken from an earlier report's results.json (report.py's `prior`) is drawn too. A results.json
written before it kept curves has none (Figure 2's kept the diversity), and `draw`'s note says
which seeds the accuracy curves leave out.
"""

import os
import re

import numpy as np


MISSING = ("Figures were not drawn: matplotlib is not installed (pip install -e \".[reproduce]\", "
           "then okddip reproduce ... --report_only).")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return plt


def slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def mean_curve(curves):
    """The mean over curves of each epoch that any curve reached (shorter curves stop early)."""
    curves = [np.asarray(curve, dtype=float) for curve in curves if curve]
    if not curves:
        return None
    length = max(len(curve) for curve in curves)
    return np.array([np.mean([curve[i] for curve in curves if len(curve) > i])
                     for i in range(length)])


def seed_curves(result):
    """A seed's per-epoch test curves ({history key: values}); a Figure 2 seed from a results.json
    written before `curves` existed has its diversity as `curve`."""
    curves = dict(result.get("curves") or {})
    if result.get("curve") and "val_diversity" not in curves:
        curves["val_diversity"] = result["curve"]
    return curves


def histories(cell):
    """The per-epoch test curves of every seed of a cell that has them, finished or training."""
    return [curves for curves in map(seed_curves, cell["seeds"].values()) if curves]


def draws_accuracy(curves):
    """Whether a seed's curves hold any accuracy `curves_figure` draws."""
    return any(curves.get(key) for key, _, _ in CURVES)


def name(cell):
    """The cell's column, marked while a seed of it is still training (its curve is shorter)."""
    training = any(result["state"] != "finished" and seed_curves(result)
                   for result in cell["seeds"].values())
    return cell["column"] + (" (in progress)" if training else "")


def integer_epochs(axis):
    from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def save(plt, figure, out_dir, name, bottom=0.0):
    """Writes the figure atomically; `bottom` is the figure fraction kept for a shared legend."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    figure.tight_layout(rect=(0, bottom, 1, 1))
    figure.savefig(path + ".tmp.png", dpi=110)
    plt.close(figure)
    os.replace(path + ".tmp.png", path)
    return name


def errors_figure(plt, results, out_dir):
    rows = results["shown_rows"]
    figure, axes = plt.subplots(len(rows), 1, figsize=(12.5, 3.4 * len(rows)), squeeze=False)
    for axis, row in zip(axes[:, 0], rows):
        cells = [cell for cell in results["cells"] if cell["row"] == row]
        x = np.arange(len(cells))
        series = (("paper", [c["paper"]["error"] if c["paper"] else np.nan for c in cells]),
                  ("ours, best epoch", [c["best"]["mean"] if c.get("best") else np.nan
                                        for c in cells]),
                  ("ours, last epoch", [c["last"]["mean"] if c.get("last") else np.nan
                                        for c in cells]))
        for offset, (label, values) in zip((-0.27, 0.0, 0.27), series):
            bars = axis.bar(x + offset, values, width=0.26, label=label)
            axis.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in values],
                           fontsize=7)
            for position, value in zip(x + offset, values):
                if np.isnan(value) and label != "paper":
                    axis.text(position, 0.5, "not measured", rotation=90, fontsize=7,
                              ha="center", va="bottom", color="grey")
        axis.set_xticks(x, [cell["column"] for cell in cells], fontsize=9)
        axis.set_ylabel("top-1 error (%)")
        every = np.array([value for _, values in series for value in values], dtype=float)
        tallest = np.nanmax(every) if np.isfinite(every).any() else 1.0
        axis.set_ylim(0, 1.35 * tallest)  # room for the legend above the bars
        axis.set_title(row)
        axis.legend(fontsize=8, ncol=3, loc="upper center")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{results['experiment']}: {results['title']}\n"
                    f"ours: {results['budget']['headline']}; the paper: 300 epochs, 3 seeds",
                    fontsize=10)
    return save(plt, figure, out_dir, "errors.png")


def interval_entries(results, row, measure):
    """The row's differences under `measure` that have an interval, in the report's order:
    (label, difference, low, high, separated)."""
    return [(f"{c['column']} − {c['versus']}", c["difference"], *c["interval"], c["separated"])
            for c in results.get("comparisons", [])
            if c["row"] == row and c["measure"] == measure and c["interval"]]


def differences_figure(plt, results, out_dir):
    """Per row, each difference the report computes with its 95% interval, beside 0: what a
    reader deciding between methods needs, and what `errors.png` cannot show (its bars span
    tens of points; the differences are a point or two). None when no pair of cells has the
    seeds for an interval."""
    per_row = {row: interval_entries(results, row, "last_error") for row in results["shown_rows"]}
    per_row = {row: entries for row, entries in per_row.items() if entries}
    if not per_row:
        return None
    heights = [len(entries) for entries in per_row.values()]
    figure, axes = plt.subplots(len(per_row), 1, squeeze=False,
                                figsize=(9, max(3.0, 1.2 + 0.32 * sum(heights))),
                                gridspec_kw={"height_ratios": heights})
    for axis, (row, entries) in zip(axes[:, 0], per_row.items()):
        entries = entries[::-1]  # the first at the top
        y = np.arange(len(entries))
        for position, (_, difference, low, high, separated) in zip(y, entries):
            colour = "tab:blue" if separated else "grey"
            axis.plot([low, high], [position, position], color=colour, linewidth=2)
            axis.plot([difference], [position], "o", color=colour,
                      markerfacecolor=colour if separated else "white")
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(y, [entry[0] for entry in entries], fontsize=8)
        axis.set_title(f"{row}: difference and 95% interval (filled, blue: excludes 0)",
                       fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("last-epoch top-1 error, first minus second (points; negative: the "
                           "first errs less)")
    figure.suptitle(f"{results['experiment']}: {results['budget']['headline']}", fontsize=10)
    return save(plt, figure, out_dir, "differences.png")


def diversity_figure(plt, results, out_dir):
    rows = results["shown_rows"]
    figure, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4), squeeze=False)
    for axis, row in zip(axes[0], rows):
        for cell in (c for c in results["cells"] if c["row"] == row):
            curve = mean_curve([h.get("val_diversity") for h in histories(cell)])
            if curve is not None:
                axis.plot(np.arange(1, len(curve) + 1), curve, marker=".",
                          label=name(cell))  # the marker shows a one-epoch curve too
        axis.set_title(f"{row} (CIFAR-100)")
        axis.set_xlabel("epoch")
        integer_epochs(axis)
        axis.set_ylabel("peer diversity (test split)")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "no run has reached an epoch yet", ha="center", va="center",
                      transform=axis.transAxes, color="grey")
    figure.suptitle(f"Figure 2: peer diversity, {results['budget']['headline']}", fontsize=10)
    return save(plt, figure, out_dir, "figure2.png")


def group_size_figure(plt, results, out_dir):
    figure, axis = plt.subplots(figsize=(7, 4.5))
    sizes = [int(column.split("=")[1]) for column in results["columns"]]
    for row, color in zip(results["shown_rows"], ("C0", "C1", "C2", "C3")):
        cells = {cell["column"]: cell for cell in results["cells"] if cell["row"] == row}
        ours = [cells[column]["best"]["mean"] if cells[column].get("best") else np.nan
                for column in results["columns"]]
        axis.plot(sizes, ours, "o-", color=color, label=f"{row} (ours, best epoch)")
        paper = [(size, cells[column]["paper"]["error"]) for size, column in
                 zip(sizes, results["columns"]) if cells[column]["paper"]]
        if paper:
            axis.plot(*zip(*paper), "x", color=color, markersize=10, mew=2,
                      label=f"{row} (paper, Table 2)")
    axis.set_xlabel("students in the group (m)")
    axis.set_ylabel("top-1 error (%)")
    axis.set_xticks(sizes)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"Figure 3: group size, ResNet-32, CIFAR-100, "
                   f"{results['budget']['headline']}", fontsize=10)
    return save(plt, figure, out_dir, "figure3.png")


# (history key, legend label, line style). Each line has its own colour, dash, marker and layer,
# so that lines with near-equal values (Ind's two ensembles, say) stay visible: the peers'
# ensemble is drawn dashed with hollow triangles above the solid lines.
CURVES = (
    ("val_leader_accuracy", "leader (the deployed student)",
     {"color": "C0", "linestyle": "-", "marker": "o", "markersize": 3, "zorder": 3}),
    ("val_student_accuracy", "mean of the students",
     {"color": "C1", "linestyle": "-", "marker": "s", "markersize": 3, "zorder": 3}),
    ("val_ensemble_accuracy", "peers' ensemble",
     {"color": "C2", "linestyle": "--", "marker": "^", "markersize": 6, "markerfacecolor": "none",
      "linewidth": 1.6, "zorder": 5}),
    ("val_student_ensemble_accuracy", "students' ensemble",
     {"color": "C3", "linestyle": ":", "marker": "x", "markersize": 5, "linewidth": 1.6,
      "zorder": 4}))
REPORTED_LINE = "the line the table reports (highlighted)"
PAPER_LINE = "paper (300 epochs)"


def reported_key(cell):
    """The history key of the accuracy the cell's table number is (metrics.json's `reporting`:
    the method's number, e.g. OKDDip's leader or the students' mean, or its ensemble)."""
    keys = {result["key"] for result in cell["seeds"].values() if result.get("key")}
    return f"val_{keys.pop()}" if len(keys) == 1 else None


def without_history_note(results):
    """The figures' note on the finished seeds that have no curves: taken from an earlier
    results.json written before it kept them."""
    taken = {}
    for cell in results["cells"]:
        for seed, result in cell["seeds"].items():
            if "source" in result and not draws_accuracy(seed_curves(result)):
                taken.setdefault(result["source"], set()).add(int(seed))
    return " ".join(f"The accuracy curves leave out seed(s) {', '.join(map(str, sorted(seeds)))} "
                    f"from `{source}` (it kept no per-epoch accuracy); they show every other "
                    "seed." for source, seeds in sorted(taken.items()))


def curves_figure(plt, results, out_dir, row):
    cells = [cell for cell in results["cells"] if cell["row"] == row]
    cells = [cell for cell in cells if any(map(draws_accuracy, histories(cell)))]
    if not cells:
        return None
    columns = min(4, len(cells))
    lines = (len(cells) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.3 * lines),
                                squeeze=False)
    for axis in axes.flat[len(cells):]:
        axis.set_visible(False)
    labels = {key: label for key, label, _ in CURVES}
    for axis, cell in zip(axes.flat, cells):
        found = [curves for curves in histories(cell) if draws_accuracy(curves)]
        reported = reported_key(cell)
        for key, label, style in CURVES:
            curve = mean_curve([history.get(key) for history in found])
            if curve is None:
                continue
            epochs = np.arange(1, len(curve) + 1)
            if key == reported:  # a wide pale band under the line the table's number is
                axis.plot(epochs, 100 * curve, color="gold", linewidth=9, alpha=0.55, zorder=1,
                          solid_capstyle="round", label=REPORTED_LINE)
            axis.plot(epochs, 100 * curve, label=label, **style)
        if cell["paper"] and cell["metric"] == "method":
            axis.axhline(100 - cell["paper"]["error"], color="grey", linestyle="-.",
                         linewidth=1, zorder=2, label=PAPER_LINE)
        title = name(cell) + (f"\nreports: {labels[reported]}" if reported in labels else "")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("epoch")
        integer_epochs(axis)
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    legend = {}  # one legend under the panels, so that none hides a curve
    for axis in axes.flat[:len(cells)]:
        legend.update(zip(*axis.get_legend_handles_labels()[::-1]))
    order = [label for _, label, _ in CURVES] + [REPORTED_LINE, PAPER_LINE]
    labels = sorted(legend, key=order.index)
    # As many entries a line as the panels' width holds (about 2.8 inches each), so that a
    # row of one or two panels wraps its legend rather than cutting it at the figure's edges.
    across = max(1, min(len(labels), int(4.2 * columns / 2.8)))
    legend_lines = -(-len(labels) // across)
    figure.legend([legend[label] for label in labels], labels, loc="lower center",
                  ncol=across, fontsize=8)
    figure.suptitle(f"{results['experiment']}, {row}: test accuracy per epoch (mean over "
                    f"seeds; {results['budget']['headline']})", fontsize=10)
    return save(plt, figure, out_dir, f"curves_{slug(row)}.png",
                bottom=(0.04 + 0.07 * legend_lines) / lines)


def draw(results, out_dir):
    """Every figure of the report into `out_dir`; returns (file names, a note or "")."""
    plt = pyplot()
    if plt is None:
        return [], MISSING
    names = []
    note = without_history_note(results)
    if results["kind"] == "table":
        names.append(errors_figure(plt, results, out_dir))
        names.append(differences_figure(plt, results, out_dir))
    elif results["kind"] == "diversity":
        names.append(diversity_figure(plt, results, out_dir))
    elif results["kind"] == "group_size":
        names.append(group_size_figure(plt, results, out_dir))
    for row in results["shown_rows"]:
        names.append(curves_figure(plt, results, out_dir, row))
    return [name for name in names if name], note

