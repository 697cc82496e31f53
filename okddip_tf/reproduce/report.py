"""The reproduction's results and report: ours beside the paper's, cell by cell.

`collect` reads every cell's run folders (history.json, metrics.json, timing.json) into plain
numbers; `write` turns them into `results.json` and `report.md` (and figures, see figures.py).
Two protocols: the paper's (the best test epoch of each seed, as the authors' code selects it)
and the honest one (the last epoch). Errors are top-1 in %, mean ± sample std over seeds.
"""

import datetime
import os
import platform

import numpy as np

from okddip_tf import atomic_files
from okddip_tf.reproduce import machine as machine_info
from okddip_tf.reproduce import manifest, runner
from okddip_tf.reproduce.budget import counted

EXCLUDED = "not run (excluded by --only)"  # a cell's state when --only left it out

def seed_result(directory, metric, epochs):
    """One seed's numbers for a cell, or its state when it has not finished."""
    done = runner.epochs_done(directory)
    if not runner.is_finished(directory, epochs):
        return {"state": f"{done}/{epochs} epochs" if done else "not started", "epochs": done}
    history = atomic_files.read_json(os.path.join(directory, "history.json"))
    reporting = atomic_files.read_json(os.path.join(directory, "metrics.json"))["reporting"]
    seconds = runner.epoch_seconds(directory)
    timed = [s for s in seconds if s is not None]
    result = {"state": "finished", "epochs": done,
              "wall_seconds": sum(timed) if len(timed) == done else None,
              "timed_epochs": len(timed),
              # Robust to a few epochs slowed by other work on a shared machine.
              "median_epoch_seconds": float(np.median(timed)) if timed else None,
              "epoch_seconds": seconds}
    if metric == "diversity":
        curve = history.get("val_diversity")
        result["curve"] = curve
        result["last_diversity"] = curve[-1] if curve else None
        return result
    key = reporting["method_accuracy"] if metric == "method" else reporting["ensemble"]
    accuracy = np.asarray(history[f"val_{key}"], dtype=float)
    best = int(np.argmax(accuracy))
    result.update({"key": key, "best_epoch": best + 1,
                   "best_error": 100.0 * (1.0 - accuracy[best]),
                   "last_error": 100.0 * (1.0 - accuracy[-1])})
    return result


def summary(values):
    """{"mean", "std" (sample, None for one value), "n"} of a list of numbers, or None."""
    if not values:
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values)}


def cell_state(seeds, reason):
    if reason:
        return reason
    finished = sum(seed["state"] == "finished" for seed in seeds.values())
    if finished == len(seeds):
        return "finished"
    if all(seed["state"] == "not started" for seed in seeds.values()):
        return "not started"
    partial = [f"seed {seed}: {result['state']}" for seed, result in seeds.items()
               if result["state"] != "finished"]
    return f"{finished}/{len(seeds)} seeds finished ({'; '.join(partial)})"


def collect(experiment, workdir, budget, selected=None):
    """results.json's content for `experiment` as it stands in `workdir`."""
    selected = set(selected if selected is not None else experiment.cells)
    cells = []
    for cell in experiment.cells:
        reason = manifest.unavailable(cell.run)
        seeds = {} if reason else {
            str(seed): seed_result(runner.run_dir(workdir, cell.run, seed), cell.metric,
                                   budget.epochs)
            for seed in range(budget.seeds)}
        finished = [seed for seed in seeds.values() if seed["state"] == "finished"]
        if not reason and cell not in selected and not finished:
            reason = EXCLUDED
        entry = {"row": cell.row, "column": cell.column, "run": cell.run.id,
                 "metric": cell.metric, "note": cell.note,
                 "paper": (None if cell.paper is None else
                           {"error": cell.paper[0], "std": cell.paper[1]}),
                 "state": cell_state(seeds, f"not available: {reason}"
                                     if reason and reason != EXCLUDED else reason),
                 "seeds": seeds}
        if cell.metric == "diversity":
            entry["last_diversity"] = summary([s["last_diversity"] for s in finished
                                               if s["last_diversity"] is not None])
        else:
            for protocol in ("best", "last"):
                entry[protocol] = summary([s[f"{protocol}_error"] for s in finished])
            if entry["best"] and cell.paper:
                entry["best_minus_paper"] = entry["best"]["mean"] - cell.paper[0]
                entry["last_minus_paper"] = entry["last"]["mean"] - cell.paper[0]
        walls = [s["wall_seconds"] for s in finished if s.get("wall_seconds") is not None]
        entry["wall_seconds_per_seed"] = summary(walls)
        entry["median_epoch_seconds"] = summary([s["median_epoch_seconds"] for s in finished
                                                 if s.get("median_epoch_seconds") is not None])
        cells.append(entry)
    return {
        "experiment": experiment.name, "title": experiment.title, "kind": experiment.kind,
        "paper": manifest.PAPER, "rows": list(experiment.rows),
        # The rows with a cell --only kept: the tables and figures show these.
        "shown_rows": [row for row in experiment.rows
                       if any(c["row"] == row and c["state"] != EXCLUDED for c in cells)],
        "row_label": experiment.row_label,
        "columns": list(experiment.columns), "note": experiment.note,
        "budget": {"epochs": budget.epochs, "seeds": budget.seeds,
                   "train_examples": budget.train_examples, "smoke": budget.smoke,
                   "drop_epochs": list(budget.drop_epochs),
                   "rampup_length": budget.rampup_length, "description": budget.describe(),
                   "headline": budget.headline()},
        "machine": machine(),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cells": cells,
    }


def machine():
    """The machine `okddip reproduce` ran on (the cells ran there too unless moved by hand)."""
    import keras  # pylint: disable=import-outside-toplevel

    result = {"cpu": machine_info.cpu_kind(), "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "keras": keras.__version__,
              "backend": keras.backend.backend(), "accelerators": accelerators()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        result["tensorflow"] = tf.__version__
        result["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return result


def accelerators():
    """Names of the GPUs/TPUs the Keras backend sees ([] on CPU)."""
    import keras  # pylint: disable=import-outside-toplevel

    try:
        if keras.backend.backend() == "jax":
            import jax  # pylint: disable=import-outside-toplevel

            return [device.device_kind for device in jax.devices() if device.platform != "cpu"]
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        return [device.name for device in tf.config.list_physical_devices()
                if device.device_type in ("GPU", "TPU")]
    except Exception:  # pylint: disable=broad-except
        return []


# --- report.md -------------------------------------------------------------------------------

def number(stats, digits=2, seeds=True):
    if not stats:
        return "—"
    text = f"{stats['mean']:.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {stats['std']:.{digits}f}"
    return text + (f" ({counted(stats['n'], 'seed')})" if seeds else "")


def paper_number(paper):
    if not paper:
        return "—"
    return f"{paper['error']:.2f}" + (f" ± {paper['std']:.2f}" if paper["std"] is not None else "")


def table_text(results, protocol):
    """A markdown table in the paper's layout: ours (paper, difference) per cell."""
    cells = {(cell["row"], cell["column"]): cell for cell in results["cells"]}
    lines = [f"| {results['row_label']} | " +
             " | ".join(results["columns"]) + " |",
             "|---" * (len(results["columns"]) + 1) + "|"]
    for row in results["shown_rows"]:  # excluded cells are counted once below the cells
        texts = []
        for column in results["columns"]:
            cell = cells.get((row, column))
            if cell is None:
                texts.append("")
                continue
            stats = cell.get(protocol)
            text = number(stats, seeds=False) if stats else short_state(cell)
            if cell["paper"]:
                diff = (f"; {stats['mean'] - cell['paper']['error']:+.2f}" if stats else "")
                text += f" (paper {cell['paper']['error']:.2f}{diff})"
            texts.append(text)
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    counts = sorted({cell[protocol]["n"] for cell in results["cells"] if cell.get(protocol)})
    if counts:
        over = ("one seed per cell, so no ±" if counts == [1] else
                "mean ± std over " + " or ".join(map(str, counts)) + " seeds (no ± with one)")
        lines += ["", f"Ours: {over}; in brackets the paper's error and ours minus it."]
    return "\n".join(lines)


def short_state(cell):
    state = cell["state"]
    if state.startswith("not available"):
        return "n/a"
    if state == EXCLUDED:
        return "not run"
    started = [seed for seed in cell["seeds"].values() if seed["state"] != "not started"]
    return "in progress" if started else "—"


def diversity_findings(results):
    """Per row, our peers' last-epoch diversity ranked, against the paper's Figure 2 claim:
    OKDDip's diversity lies above ONE's and CL-ILR's and below Ind's (its upper bound)."""
    lines = []
    for row in results["rows"]:
        cells = [cell for cell in results["cells"]
                 if cell["row"] == row and cell.get("last_diversity")]
        found = {cell["column"]: cell["last_diversity"]["mean"] for cell in cells}
        if len(found) < 2:
            continue
        ranked = sorted(found, key=found.get, reverse=True)
        line = (f"- {row}, highest last-epoch diversity first: "
                + ", ".join(f"{column} {found[column]:.3f}" for column in ranked) + ".")
        if "OKDDip" in found:
            rivals = [column for column in ("ONE", "CL-ILR") if column in found]
            holds = (all(found["OKDDip"] > found[column] for column in rivals)
                     and found.get("Ind", np.inf) >= found["OKDDip"])
            missing = [c for c in ("ONE", "CL-ILR", "Ind") if c not in found]
            line += (f" The paper's claim (OKDDip above ONE and CL-ILR, below Ind) "
                     f"{'holds' if holds else 'does not hold'} here"
                     + (f" for the cells measured ({', '.join(missing)} not yet)" if missing
                        else "") + ".")
        if max(cell["last_diversity"]["n"] for cell in cells) == 1:
            line += " One seed per cell."
        lines.append(line)
    return lines


def findings(results):
    """Plain sentences: per row, our ranking of the columns beside the paper's."""
    if results["kind"] == "diversity":
        return diversity_findings(results)
    lines = []
    for row in results["rows"]:
        cells = [cell for cell in results["cells"] if cell["row"] == row and cell.get("best")]
        if len(cells) < 2:
            continue
        ours = sorted(cells, key=lambda cell: cell["best"]["mean"])
        text = ", ".join(f"{cell['column']} {cell['best']['mean']:.2f}" for cell in ours)
        line = f"- {row}, lowest error first (best epoch): {text}."
        with_paper = [cell for cell in ours if cell["paper"]]
        if len(with_paper) >= 2:
            paper = sorted(with_paper, key=lambda cell: cell["paper"]["error"])
            same = [cell["column"] for cell in paper] == [cell["column"] for cell in with_paper]
            line += (" The paper orders these cells the same way." if same else
                     " The paper's order: " + ", ".join(
                         f"{cell['column']} {cell['paper']['error']:.2f}" for cell in paper) + ".")
            spread = max(c["best"]["mean"] for c in ours) - min(c["best"]["mean"] for c in ours)
            noise = max((c["best"]["std"] or 0.0) for c in ours)
            if noise == 0.0:
                line += (f" Our spread is {spread:.2f} points, from one seed per cell: "
                         "differences this size are not separated from seed noise.")
        lines.append(line)
    return lines


def machine_text(machine):
    cpu = machine["cpu"]
    accelerators = ", ".join(machine["accelerators"]) or "none"
    backend = machine["backend"] + (f" {machine['tensorflow']}" if "tensorflow" in machine
                                     else "")
    return (f"{cpu['model_name']} ({cpu['kind']}), {machine['cpu_count']} cores; accelerators: "
            f"{accelerators}; Keras {machine['keras']} on {backend}, Python {machine['python']}")


def cell_rows(results):
    diversity = results["kind"] == "diversity"  # Figure 2 has curves, no errors or numbers
    lines = (["| cell | run | state | last-epoch diversity | wall time per seed (median epoch) |",
              "|---|---|---|---|---|"] if diversity else
             ["| cell | run | state | best-epoch error | last-epoch error | paper | "
              "wall time per seed (median epoch) |", "|---|---|---|---|---|---|---|"])
    excluded = [cell for cell in results["cells"] if cell["state"] == EXCLUDED]
    for cell in results["cells"]:
        if cell["state"] == EXCLUDED:
            continue
        wall, epoch = cell["wall_seconds_per_seed"], cell["median_epoch_seconds"]
        wall_text = runner.duration(wall["mean"]) if wall else "—"
        if epoch:
            wall_text += f" ({runner.duration(epoch['mean'])})"
        values = ([number(cell.get("last_diversity"), 3)] if diversity else
                  [number(cell["best"]) + best_epochs(cell), number(cell["last"]),
                   paper_number(cell["paper"])])
        lines.append(f"| {cell['row']} / {cell['column']} | `{cell['run']}` | {cell['state']} | "
                     + " | ".join(values) + f" | {wall_text} |")
    if excluded:
        rows = [row for row in results["rows"] if any(c["row"] == row for c in excluded)]
        lines += ["", f"{len(excluded)} cells were not run (excluded by --only), in the rows "
                  f"{', '.join(rows)}; results.json lists them with the paper's numbers."]
    return "\n".join(lines)


def best_epochs(cell):
    epochs = [str(seed["best_epoch"]) for seed in cell["seeds"].values() if "best_epoch" in seed]
    return f" (epoch {', '.join(epochs)})" if epochs else ""


def markdown(results, figures=(), figures_note=""):
    """report.md: budget first, then what it shows, the tables, every cell, the figures."""
    cells = results["cells"]
    kept = [cell for cell in cells if cell["state"] != EXCLUDED]
    measured = [cell for cell in kept if cell["state"] == "finished"]
    seeds = {cell["seeds"][key]["state"] for cell in kept for key in cell["seeds"]}
    selection = ("" if len(kept) == len(cells) else
                 f" ({len(cells) - len(kept)} left out by --only)")
    lines = [f"# {results['experiment']} at {results['budget']['headline']}: {results['title']}",
             "",
             f"**Budget:** {results['budget']['description']}.", "",
             f"**Machine:** {machine_text(results['machine'])}. Generated "
             f"{results['generated']}.", "",
             f"**Cells:** {len(measured)} of {len(kept)} finished{selection}" +
             (f"; {len(kept) - len(measured)} not: see their state below"
              if len(measured) < len(kept) else "") +
             (". Seeds still running or missing are left out of the means."
              if seeds - {"finished"} else "."), "",
             f"Paper: {results['paper']}. " + (
                 "Its Figure 2 draws curves and gives no numbers; ours are means over seeds."
                 if results["kind"] == "diversity" else
                 "Errors are top-1 %, mean ± sample std over seeds. The paper's protocol takes "
                 "each seed's best test epoch (the authors' code selects the epoch on the test "
                 "split, an optimistic number); the last epoch is the honest one."), ""]
    if results["note"]:
        lines += [results["note"], ""]
    found = findings(results)
    if found:
        lines += ["## What it shows", "", *found, ""]
    if results["kind"] != "diversity":
        lines += ["## Ours under the paper's protocol (best test epoch)", "",
                  table_text(results, "best"), "",
                  "## Ours at the last epoch", "", table_text(results, "last"), ""]
    lines += ["## Every cell", "", cell_rows(results), ""]
    notes = sorted({cell["note"] for cell in cells
                    if cell["note"] and cell["state"] != EXCLUDED})
    if notes:
        lines += [*(f"- {note}" for note in notes), ""]
    lines += ["## Figures", ""]
    lines += [f"![{name}](figures/{name})" for name in figures]
    if figures_note:
        lines.append(figures_note)
    lines += ["", "Every cell is an `okddip train` workdir, `<run>/seed<k>/` under the "
              "experiment's workdir (its command is the first line of its train.log); `okddip "
              "reproduce` with the same flags resumes unfinished cells and `--report_only` "
              "rebuilds this report.", ""]
    return "\n".join(lines)


def write(results, out_dir, figures=(), figures_note=""):
    """results.json and report.md into `out_dir`; returns the report's path."""
    atomic_files.write_json(os.path.join(out_dir, "results.json"), results)
    path = os.path.join(out_dir, "report.md")
    atomic_files.write_text(path, markdown(results, figures, figures_note))
    return path
