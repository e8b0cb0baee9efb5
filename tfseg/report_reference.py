"""The report's section on the reference program against tfseg (issue 21).

The reference program (mateuszbuda/brain-segmentation-pytorch, run by
``benchmarks/reference_program/run.py``) writes its runs as tfseg results folders whose
``config.json`` names the architecture ``unet (reference program)``. This module puts them
beside one tfseg recipe:

* each side's seed group (mean ± sd of the runs' mean DSC), each patient's seed-averaged DSC
  side by side, the paired Wilcoxon test over the patients, and whether the difference of the
  seed-means exceeds both groups' spread (the sum of the two sds: tfseg.seed_groups' rule);
* time to accuracy: training minutes until the validation mean first reaches the program run's
  figures (its final epoch's and, where higher, its best epoch's: the figure the program reports),
  for pairs of runs (tfseg run, program run) that the caller says were measured on
  the same machine in the same session. Minutes from different machines or sessions are not
  comparable (the CPUs differ several-fold), so a pair whose recorded machines differ is refused.

Only finished program runs count in the group; runs still in progress are listed apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from tfseg.markdown import DASH, table as _table
from tfseg.runs import RunFolderError, RunRecord, as_number
from tfseg.seed_groups import SeedGroup, describe_group, paired_comparison, seed_groups

# What benchmarks/reference_program/run.py writes as the program's "arch" in config.json.
REFERENCE_PROGRAM_ARCH = "unet (reference program)"
# Machine facts that must be equal for two runs' minutes to be compared (platform names the VM and kernel).
SAME_MACHINE_KEYS = ("cpu", "cpu_bf16", "cpu_count", "platform")
# A figure equal to the target up to float rounding (a mean recomputed from other sums) has reached it.
REACHED_TOLERANCE = 1e-9


class ReferenceComparisonError(RunFolderError):
    """The comparison cannot be made as asked (an unknown run, a pair from two machines); the message says why."""


def is_reference_program(run: RunRecord) -> bool:
    return run.config.get("arch") == REFERENCE_PROGRAM_ARCH


def program_runs(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(the reference program's finished runs, those still in progress), each sorted by name."""
    program = sorted((run for run in runs if is_reference_program(run)), key=lambda run: run.name)
    finished = [run for run in program if run.config_file.get("finished") is not False]
    return finished, [run for run in program if run not in finished]


def recipe_group(runs: list[RunRecord], name: str) -> SeedGroup:
    """The seed group (tfseg.seed_groups' own grouping, one run per seed) of the run called ``name``."""
    match = [run for run in runs if run.name == name]
    if not match:
        raise ReferenceComparisonError(f"--recommended {name}: no run of that name among the report's runs; "
                                       "give the name of one run of the recipe's seed group")
    group = next((g for g in seed_groups(runs, min_size=1) if match[0] in g.runs), None)
    if group is None:
        raise ReferenceComparisonError(f"--recommended {name}: the run has no mean DSC yet (no metrics.json or "
                                       "evaluation); evaluate it or name another run of the recipe")
    return group


def minutes_to_reach(run: RunRecord, target: float) -> tuple[float | None, int | None]:
    """(cumulative wall minutes of training and validation, epoch) when the run's validation mean first
    reached ``target``; (None, None) when it never did or its history has no training time.

    tfseg's ``train_seconds`` is the wall clock since training started, its per-epoch validation included;
    the program's records keep validation apart (a per-epoch ``valid_seconds`` column), which is added back
    so that both count the same thing."""
    validation = 0.0
    for row in run.history or []:
        elapsed, dsc = as_number(row.get("train_seconds")), as_number(row.get("val_volume_dsc"))
        if elapsed is None:
            return None, None
        validation += as_number(row.get("valid_seconds")) or 0.0
        if dsc is not None and dsc >= target - REACHED_TOLERANCE:
            return (elapsed + validation) / 60, int(row["epoch"])
    return None, None


def validation_targets(run: RunRecord) -> list[tuple[str, float]]:
    """The figures a program run is timed to: (label, DSC) of its final epoch and, where it is higher, of its
    best epoch (the program keeps and reports its best epoch; its curve can fall at the end, as run 2's did)."""
    rows = [row for row in run.history or [] if as_number(row.get("val_volume_dsc")) is not None]
    if not rows:
        return []
    final = as_number(rows[-1]["val_volume_dsc"])
    best_row = max(rows, key=lambda row: as_number(row["val_volume_dsc"]))
    best = as_number(best_row["val_volume_dsc"])
    if best <= final:
        return [("final and best epoch", final)]
    return [("final epoch", final), (f"best, epoch {int(as_number(best_row['epoch']))}: the figure it reports", best)]


def check_same_machine(first: RunRecord, second: RunRecord) -> None:
    a, b = first.config_file.get("machine") or {}, second.config_file.get("machine") or {}
    differ = [key for key in SAME_MACHINE_KEYS if a.get(key) != b.get(key)]
    if differ:
        details = "; ".join(f"{key}: {a.get(key)!r} against {b.get(key)!r}" for key in differ)
        raise ReferenceComparisonError(
            f"--time-pair {first.name} {second.name}: their config.json record different machines ({details}); "
            "time to accuracy is compared only for runs trained on the same machine in the same session")


@dataclass
class TimePair:
    """One tfseg run and one program run timed on the same machine, and the figure both are timed to."""

    tfseg: RunRecord
    program: RunRecord

    def rows(self) -> list[list[str]]:
        """One table row per target (tfseg.report_reference.validation_targets); a dash row without a history."""
        machine = self.tfseg.config_file.get("machine") or {}
        cpu = str(machine.get("cpu", DASH)) + (" (bf16)" if machine.get("cpu_bf16") else "")
        names = [f"`{self.tfseg.name}`", f"`{self.program.name}`"]
        targets = validation_targets(self.program)
        if not targets:
            return [names + [DASH, DASH, DASH, DASH, cpu]]
        rows = []
        for label, target in targets:
            t_min, t_epoch = minutes_to_reach(self.tfseg, target)
            p_min, p_epoch = minutes_to_reach(self.program, target)
            ratio = f"{p_min / t_min:.1f}×" if t_min and p_min else DASH
            rows.append(names + [f"{target:.4f} ({label})", _minutes(t_min, t_epoch), _minutes(p_min, p_epoch),
                                 ratio, cpu])
        return rows


def _minutes(minutes: float | None, epoch: int | None) -> str:
    return "not reached" if minutes is None else f"{minutes:.1f} min (epoch {epoch})"


def time_pairs(runs: list[RunRecord], extra: list[RunRecord], pairs: list[tuple[str, str]]) -> list[TimePair]:
    """The named (tfseg run, program run) pairs, looked up among ``runs`` and ``extra`` (runs loaded for
    the timing only, e.g. a same-seed rerun kept out of the seed groups); each pair's machines checked equal."""
    by_name = {run.name: run for run in [*extra, *runs]}
    out = []
    for tfseg_name, program_name in pairs:
        missing = [name for name in (tfseg_name, program_name) if name not in by_name]
        if missing:
            raise ReferenceComparisonError(f"--time-pair {tfseg_name} {program_name}: no run called "
                                           f"{', '.join(missing)}; give run folder names of the report's runs "
                                           "or of --time-run folders")
        pair = TimePair(by_name[tfseg_name], by_name[program_name])
        if not is_reference_program(pair.program):
            raise ReferenceComparisonError(f"--time-pair {tfseg_name} {program_name}: the second run is not the "
                                           f"reference program's (its config.json arch is not "
                                           f"'{REFERENCE_PROGRAM_ARCH}')")
        check_same_machine(pair.tfseg, pair.program)
        out.append(pair)
    return out


def reference_section(runs: list[RunRecord], recommended: str | None, pairs: list[TimePair]) -> list[str]:
    """Markdown lines: the program's group against the recommended recipe's, and time to accuracy."""
    finished, in_progress = program_runs(runs)
    if not finished and not in_progress:
        return []
    lines = ["## The reference program against tfseg", ""]
    if in_progress:
        lines += ["In progress, not counted: " + ", ".join(
            f"`{run.name}` ({len(run.history or [])} of 12 epochs)" for run in in_progress) + ".", ""]
    if not finished:
        return lines + ["No finished run of the reference program yet.", ""] + _time_lines(pairs)
    program = SeedGroup(finished)
    recipe = recipe_group(runs, recommended) if recommended else None
    lines += _group_table([(f"the reference program ({REFERENCE_PROGRAM_ARCH}, base 32)", program)]
                          + ([("tfseg's recommended recipe", recipe)] if recipe else []))
    if recipe is None:
        lines += ["No tfseg recipe named (`--recommended NAME`): no paired comparison.", ""]
    elif len(program.runs) < 2 or len(recipe.runs) < 2:
        lines += [f"No verdict: the program has {len(program.runs)} finished run(s) and the recipe "
                  f"{len(recipe.runs)} seed(s); a spread needs at least two of each.", ""]
        lines += _patient_table(recipe, program)
    else:
        lines += _verdict(recipe, program) + _patient_table(recipe, program)
    return lines + _time_lines(pairs)


def _group_table(groups: list[tuple[str, SeedGroup]]) -> list[str]:
    rows = []
    for label, group in groups:
        d = describe_group(group)
        rows.append([label, ", ".join(f"`{n}`" for n in d["runs"]), ", ".join(f"{v:.4f}" for v in d["mean_dsc_by_seed"]),
                     f"{d['mean']:.4f} ± {d['sd']:.4f}"])
    return _table(["Group", "Runs", "Mean DSC per run", "Mean ± sd"], rows) + [
        "", "The program's figures are its own (`utils.dsc` per volume after rounding and its largest connected "
        "component, on its validation patients, best epoch); tfseg's come from `evaluate.py` in the preprocessed "
        "geometry (docs/protocol.md: the same preprocessing and metric). The program seeds nothing itself: its "
        "runs differ by their initial weights.", ""]


def _verdict(recipe: SeedGroup, program: SeedGroup) -> list[str]:
    c = paired_comparison(recipe, program)
    p = DASH if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3f}"
    beyond = "exceeds" if c["beyond_spread"] else "does not exceed"
    verdict = ("tfseg's recommended recipe beats the reference program beyond both groups' spread"
               if c["beyond_spread"] else
               "tfseg's recommended recipe does not beat the reference program beyond both groups' spread")
    return [f"**Verdict: {verdict}.** Difference of the seed-means {c['seed_mean_difference']:+.4f}, which "
            f"{beyond} the spread (the sum of the two sds, {c['spread']:.4f}); each patient's DSC averaged over "
            f"the runs: mean difference {c['mean_difference']:+.4f} over {len(c['patients'])} patients, "
            f"{c['improved']} better and {c['worsened']} worse with tfseg; paired Wilcoxon signed-rank p = {p}.", ""]


def _patient_table(recipe: SeedGroup, program: SeedGroup) -> list[str]:
    a, b = recipe.dsc_by_patient(), program.dsc_by_patient()
    rows = [[f"`{patient}`", f"{b[patient]:.4f}", f"{a[patient]:.4f}", f"{a[patient] - b[patient]:+.4f}"]
            for patient in sorted(set(a) & set(b))]
    return _table(["Patient", "Reference program (mean of runs)", "tfseg recipe (mean of seeds)", "Difference"],
                  rows) + [""]


def _time_lines(pairs: list[TimePair]) -> list[str]:
    lines = ["### Time to accuracy, the same machine", ""]
    if not pairs:
        return lines + ["No pair of runs timed on the same machine in the same session was given "
                        "(`--time-pair TFSEG_RUN PROGRAM_RUN`).", ""]
    rows = [row for pair in pairs for row in pair.rows()]
    return lines + _table(["tfseg run", "program run", "target: the program run's validation DSC",
                           "tfseg: minutes to reach it", "program: minutes to reach it",
                           "program / tfseg", "CPU"], rows) + [
        "", "Minutes are cumulative wall time of training and per-epoch validation (start-up and data "
        "preparation excluded) until the validation mean first reaches the target; the two runs of a row were "
        "trained on the same machine, one after the other, so "
        "the ratio holds where the minutes would not on another CPU.", ""]
