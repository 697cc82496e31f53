"""The reproduction's results and report: ours beside the paper's, cell by cell.

`collect` reads every cell's run folders (history.json, metrics.json, timing.json, sittings.json)
into plain numbers, each seed's per-epoch test curves with them; `write` turns them into
`results.json` and `report.md` (and figures, see figures.py).
Two protocols: the paper's (the best test epoch of each seed, as the authors' code selects it)
and the honest one (the last epoch). Errors are top-1 in %, mean ± sample std over seeds.
`comparisons` computes each column's difference from Baseline (and the OKDDip columns' from every
other column) with a 95% t interval and its p (statistics.py), and Holm's correction over each
measure's intervals, so that the report claims only what the seeds measure.
A cell's seeds missing from the workdir can come from an earlier report's results.json (`prior`).
"""

import collections
import datetime
import os
import platform
import re

import numpy as np

from okddip_tf import atomic_files
from okddip_tf.reproduce import machine as machine_info
from okddip_tf.errors import ConfigError
from okddip_tf.reproduce import manifest, runner
from okddip_tf.reproduce.budget import counted
from okddip_tf.reproduce.statistics import CONFIDENCE, difference, holm, summary

EXCLUDED = "not run (excluded by --only)"  # a cell's state when --only left it out

def seed_result(directory, metric, epochs):
    """One seed's numbers for a cell, or its state when it has not finished."""
    done = runner.epochs_done(directory)
    # Epochs per CPU: timings compare only within one CPU kind.
    cpus = runner.sitting_cpus(directory, done)
    gpus = runner.sitting_counts(directory, done, "gpus")  # "none": trained on the CPU alone
    code = runner.sitting_counts(directory, done, "code")  # seeds added later: newer code?
    history = atomic_files.read_json(os.path.join(directory, "history.json"), {})
    # The per-epoch test curves travel in results.json, so that a report taking this seed from
    # it (`prior`) still draws them after the run folder is gone.
    curves = {key: values for key, values in history.items() if key.startswith("val_")}
    if not runner.is_finished(directory, epochs):
        return {"state": f"{done}/{epochs} epochs" if done else "not started", "epochs": done,
                "cpus": cpus, "gpus": gpus, "code": code, "curves": curves}
    reporting = atomic_files.read_json(os.path.join(directory, "metrics.json"))["reporting"]
    seconds = runner.epoch_seconds(directory)
    timed = [s for s in seconds if s is not None]
    result = {"state": "finished", "epochs": done,
              "wall_seconds": sum(timed) if len(timed) == done else None,
              "timed_epochs": len(timed),
              # Robust to a few epochs slowed by other work on a shared machine.
              "median_epoch_seconds": float(np.median(timed)) if timed else None,
              "epoch_seconds": seconds, "cpus": cpus, "gpus": gpus, "code": code,
              "curves": curves}
    if metric == "diversity":
        curve = history.get("val_diversity")  # also in `curves`; results.json has kept it here
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


def compared_pairs(columns):
    """(column, versus) pairs: every column against Baseline, the OKDDip columns against all."""
    pairs = [(column, "Baseline") for column in columns
             if "Baseline" in columns and column != "Baseline"]
    for column in columns:
        if column.startswith("OKDDip"):
            pairs += [(column, other) for other in columns
                      if other not in (column, "Baseline") and (column, other) not in pairs
                      and (other, column) not in pairs]
    return pairs


def measures(kind):
    """The per-seed numbers compared: errors under both protocols, or the last diversity."""
    return ("last_diversity",) if kind == "diversity" else ("best_error", "last_error")


def comparisons(results):
    """results.json's "comparisons": one entry per row, pair of columns and measure."""
    found = []
    for row in results["rows"]:
        cells = {cell["column"]: cell for cell in results["cells"] if cell["row"] == row}
        for column, versus in compared_pairs([c for c in results["columns"] if c in cells]):
            for measure in measures(results["kind"]):
                values = [{seed: result[measure] for seed, result in cells[name]["seeds"].items()
                           if result["state"] == "finished" and result.get(measure) is not None}
                          for name in (column, versus)]
                if all(values):
                    found.append({"row": row, "column": column, "versus": versus,
                                  "measure": measure, **difference(*values),
                                  "holm_separated": None})
    for measure in measures(results["kind"]):  # Holm over the report's intervals per measure
        family = [entry for entry in found if entry["measure"] == measure and entry["interval"]]
        for entry, rejected in zip(family, holm([entry["p_value"] for entry in family])):
            entry["holm_separated"] = rejected
    return found


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


def load_prior(path, experiment, budget):
    """An earlier report's results.json of the same experiment and budget, to take seeds from.

    Returns {"source": "<path> (generated <date>)", "cells": {(row, column): cell}}; a clear
    error when the file is missing or its experiment, epochs, train_examples or smoke differ.
    """
    prior = atomic_files.read_json(path)
    if not isinstance(prior, dict) or "cells" not in prior:
        raise ConfigError(f"--prior_results={path}: no results.json of an earlier report there.")
    if prior.get("experiment") != experiment.name:
        raise ConfigError(f"--prior_results={path} is a report of {prior.get('experiment')!r}, "
                          f"not of {experiment.name!r}: its seeds are other cells.")
    here = {"epochs": budget.epochs, "train_examples": budget.train_examples,
            "smoke": budget.smoke}
    there = prior.get("budget") or {}
    differ = [f"{key}={there.get(key)!r} there, {value!r} here"
              for key, value in here.items() if there.get(key) != value]
    if differ:
        raise ConfigError(f"--prior_results={path} was trained at another budget ("
                          f"{'; '.join(differ)}): its seeds cannot stand beside these.")
    return {"source": f"{path} (generated {prior.get('generated', 'at an unknown date')})",
            "cells": {(cell["row"], cell["column"]): cell for cell in prior["cells"]}}


def with_prior_seeds(seeds, earlier, run, source):
    """`seeds` with each seed the workdir has not finished taken from `earlier` (the same cell
    in an earlier results.json, if it trained the same `run`) where it finished there, marked
    with its source."""
    if not earlier or earlier.get("run") != run:
        return seeds
    for seed, result in seeds.items():
        taken = earlier.get("seeds", {}).get(seed)
        if result["state"] != "finished" and taken and taken["state"] == "finished":
            # A seed the earlier report itself took from another keeps that source.
            seeds[seed] = {**taken, "source": taken.get("source", source)}
    return seeds


def collect(experiment, workdir, budget, selected=None, prior=None):
    """results.json's content for `experiment` as it stands in `workdir`.

    `prior`: the path of an earlier report's results.json (same experiment and budget); a seed
    the workdir has not finished is taken from it where it finished there.
    """
    selected = set(selected if selected is not None else experiment.cells)
    prior = load_prior(prior, experiment, budget) if prior else None
    cells = []
    for cell in experiment.cells:
        reason = manifest.unavailable(cell.run)
        seeds = {} if reason else {
            str(seed): seed_result(runner.run_dir(workdir, cell.run, seed), cell.metric,
                                   budget.epochs)
            for seed in range(budget.seeds)}
        if prior and not reason:
            seeds = with_prior_seeds(seeds, prior["cells"].get((cell.row, cell.column)),
                                     cell.run.id, prior["source"])
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
    results = {
        "experiment": experiment.name, "title": experiment.title, "kind": experiment.kind,
        "paper": manifest.PAPER, "rows": list(experiment.rows),
        # The rows with a cell --only kept: the tables and figures show these.
        "shown_rows": [row for row in experiment.rows
                       if any(c["row"] == row and c["state"] != EXCLUDED for c in cells)],
        "row_label": experiment.row_label,
        "columns": list(experiment.columns), "note": experiment.note,
        "budget": {"epochs": budget.epochs, "seeds": budget.seeds,
                   "train_examples": budget.train_examples, "smoke": budget.smoke,
                   "drop_epochs": list(budget.scaled(experiment.schedule)[0]),
                   "rampup_length": budget.scaled(experiment.schedule)[1],
                   "description": budget.describe(experiment.schedule),
                   "headline": budget.headline()},
        "machine": machine(),
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cells": cells,
        # The seeds taken from earlier reports, by source (see each seed's "source").
        "seed_sources": sorted({seed["source"] for cell in cells
                                for seed in cell["seeds"].values() if "source" in seed}),
    }
    results["comparisons"] = comparisons(results)
    return results


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


MEASURES = {"best_error": "best epoch", "last_error": "last epoch",
            "last_diversity": "last epoch"}


def comparison_lines(results, row, digits):
    """The row's computed differences, a markdown sub-bullet per pair of columns."""
    pairs = {}
    for entry in results.get("comparisons", []):
        if entry["row"] == row:
            pairs.setdefault((entry["column"], entry["versus"]), []).append(entry)
    return [comparison_text(column, versus, entries, digits)
            for (column, versus), entries in pairs.items()]


def comparison_text(column, versus, entries, digits):
    """One pair's differences under each measure: the interval where the seeds measure one."""
    first = entries[0]  # the measures of one pair share their seeds, so their test
    if first["test"] is None:
        values = ", ".join(f"{MEASURES[e['measure']]} {e['difference']:+.{digits}f}"
                           for e in entries)
        single = [name for name, n in zip((column, versus), first["n"]) if n == 1]
        return (f"  - {column} − {versus}: {values}; one seed in {' and in '.join(single)}: the "
                "seed-to-seed spread is not measured, so there is no interval.")
    if first["test"] == "paired t":
        how = (f"paired t over seeds {', '.join(first['seeds'][0])}, "
               f"{counted(first['df'], 'degree')} of freedom")
    else:
        how = ("Welch's t, " + ("no spread in either cell" if first["df"] is None else
                                f"{first['df']:.1f} degrees of freedom")
               + f"; seeds {', '.join(first['seeds'][0])} against {', '.join(first['seeds'][1])}")
    parts = []
    for entry in entries:
        low, high = entry["interval"]
        corrected = ("" if not entry["separated"] else
                     "; holds under Holm's correction too" if entry.get("holm_separated") else
                     "; not under Holm's correction")
        parts.append(f"{MEASURES[entry['measure']]} {entry['difference']:+.{digits}f} (95% CI "
                     f"{low:+.{digits}f} to {high:+.{digits}f}"
                     + (", separated from 0" if entry["separated"] else "")
                     + f"; p = {entry['p_value']:.2g}{corrected})")
    return f"  - {column} − {versus} ({how}): {', '.join(parts)}."


def comparison_method(results):
    """The sentence that says how the report's differences are computed."""
    what = ("last-epoch peer diversity minus the second's" if results["kind"] == "diversity"
            else "top-1 error minus the second's, in points (negative: the first errs less)")
    return (f"Each difference below is the first column's {what}: a mean over seeds with a 95% "
            "confidence interval, Student's t over the per-seed differences where both cells "
            "finished the same seeds, Welch's t (Welch–Satterthwaite degrees of freedom) "
            "otherwise. A cell with one seed measures no seed-to-seed spread, so its differences "
            "get no interval." + many_intervals(results["comparisons"]))


def many_intervals(comparisons):
    """The caution a reader owes a list of 95% intervals: with k of them and no correction for
    their number, about 0.05 k exclude 0 by chance even where no cell differs from another."""
    counts = collections.Counter(c["measure"] for c in comparisons if c.get("interval"))
    if not counts:
        return ""
    k = max(counts.values())
    return (f" The report computes {k} such interval{'s' if k > 1 else ''} per measure, each at "
            f"95% with no correction for their number: if no cell truly differed from another, "
            f"about {(1 - CONFIDENCE) * k:.2f} of them would still exclude 0 by chance, so one "
            "interval that does is weaker evidence than it would be alone. Each gives its "
            "two-sided p; where it excludes 0, Holm's step-down correction over the measure's "
            "intervals (which keeps the chance of any false exclusion among them at 5%) says "
            "whether it holds there too.")


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
            line += (f" By the means, the paper's claim (OKDDip above ONE and CL-ILR, below Ind) "
                     f"{'holds' if holds else 'does not hold'} here"
                     + (f" for the cells measured ({', '.join(missing)} not yet)" if missing
                        else "") + "; the differences:")
        lines += [line, *comparison_lines(results, row, 3)]
    return lines


def findings(results):
    """Plain sentences: per row, our ranking of the columns beside the paper's, then each
    difference with its computed interval (or the reason it has none)."""
    if results["kind"] == "diversity":
        lines = diversity_findings(results)
    else:
        lines = []
        for row in results["rows"]:
            cells = [cell for cell in results["cells"]
                     if cell["row"] == row and cell.get("best")]
            if len(cells) < 2:
                continue
            ours = sorted(cells, key=lambda cell: cell["best"]["mean"])
            text = ", ".join(f"{cell['column']} {cell['best']['mean']:.2f}" for cell in ours)
            line = f"- {row}, lowest error first (best epoch): {text}."
            with_paper = [cell for cell in ours if cell["paper"]]
            if len(with_paper) >= 2:
                paper = sorted(with_paper, key=lambda cell: cell["paper"]["error"])
                same = [c["column"] for c in paper] == [c["column"] for c in with_paper]
                line += (" The paper orders these cells the same way." if same else
                         " The paper's order: " + ", ".join(
                             f"{c['column']} {c['paper']['error']:.2f}" for c in paper) + ".")
            lines += [line, *comparison_lines(results, row, 2)]
    if results.get("comparisons"):
        lines = [comparison_method(results), "", *lines]
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


def trained_on_text(results):
    """The report's lines on which CPUs (and GPUs, where any trained), and which okddip_tf code,
    trained the finished seeds' epochs (the cells may have trained over several sittings, on
    other machines than the one writing the report and with other commits). A seed taken from
    an earlier report counts as that report recorded it; one it kept no record of counts as
    "not recorded"."""
    lines = []
    for field, what in (("cpus", "CPU"), ("gpus", "GPU"), ("code", "okddip_tf commit")):
        epochs = {}
        for cell in results["cells"]:
            for seed in cell["seeds"].values():
                if seed["state"] == "finished":
                    counts = seed.get(field) or {runner.NOT_RECORDED: seed["epochs"]}
                    for value, count in counts.items():
                        epochs[value] = epochs.get(value, 0) + count
        if field == "gpus" and set(epochs) <= {"none", runner.NOT_RECORDED}:
            continue  # every epoch on CPUs: the CPU line says it all
        if epochs:
            listed = "; ".join(f"{value}: {count}" for value, count in sorted(epochs.items()))
            lines += [f"**Epochs trained per {what}** (every finished seed, from its run's "
                      "sittings.json, or as the earlier report it comes from recorded it; \"not "
                      f"recorded\": trained before sittings.json kept it): {listed}.", ""]
    return lines


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
             *trained_on_text(results),
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
    sources = seed_sources_text(results)
    if sources:
        lines += [sources, ""]
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


def seed_sources_text(results):
    """Which seeds came from an earlier report rather than this workdir ("" when none did)."""
    texts = []
    for source in results.get("seed_sources", []):
        by_seed = {}
        for cell in results["cells"]:
            for seed, result in cell["seeds"].items():
                if result.get("source") == source:
                    by_seed.setdefault(seed, []).append(f"{cell['row']} / {cell['column']}")
        texts.append("; ".join(f"seed {seed} of {', '.join(cells)}"
                               for seed, cells in sorted(by_seed.items(), key=lambda i: int(i[0])))
                     + f" from `{source}`")
    if not texts:
        return ""
    return ("**Seeds:** " + "; ".join(texts) + ". Every other finished seed is a run in this "
            "workdir.")


def write(results, out_dir, figures=(), figures_note=""):
    """results.json and report.md into `out_dir`; returns the report's path."""
    atomic_files.write_json(os.path.join(out_dir, "results.json"), results)
    path = os.path.join(out_dir, "report.md")
    atomic_files.write_text(path, markdown(results, figures, figures_note))
    return path


def rewrite(out_dir):
    """Recomputes results.json's comparisons and report.md from `out_dir`'s results.json alone
    (for a report whose run folders are gone), keeping its machine, date, cells and figures."""
    results = atomic_files.read_json(os.path.join(out_dir, "results.json"))
    results["seed_sources"] = sorted({seed["source"] for cell in results["cells"]
                                      for seed in cell["seeds"].values() if "source" in seed})
    results["comparisons"] = comparisons(results)
    report_path = os.path.join(out_dir, "report.md")
    with open(report_path, encoding="utf-8") as f:
        names = re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", f.read())
    return write(results, out_dir, names)
