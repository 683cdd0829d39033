"""A run directory and its one owner, `RunDir`: every file name, the refusal to overwrite a run, creation (or
clearing with force), resume, torchrun restart marks, and every read and write of its records. `InMemory`
keeps the same records for `train(cfg, None)`, which writes no file and no checkpoint.

    config.json     the resolved config (under a time_limit the fitted one)
    split.json      the labeled / unlabeled / validation indices
    metrics.jsonl   one record a line: train, eval, refresh, budget (cut back to the checkpoint on resume)
    last.pt         the newest checkpoint, prev.pt the one before it (checkpoint.py writes and reads them;
                    last.pt.tmp while one is being written)
    results.json    the results dict, once the run finished
    launch.json     which torchrun launch created the directory (so that a restart continues only its own run)
    tb/             TensorBoard events, when tensorboard is installed
    features_tsne.png  the t-SNE plot of the test features, by default (`metassl tsne`: diagnostics/tsne.py)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..config import Config, load_saved, to_dict
from ..errors import UserError
from .files import atomic_write_text


def parse_records(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The whole records of a metrics.jsonl text (dicts with an iteration and a kind) and the numbers of the
    non-blank lines that are not one (a run killed mid-write tears its last line)."""
    records, torn = [], []
    for i, line in enumerate(text.splitlines(), 1):
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("iteration"), int) and "kind" in rec:
                records.append(rec)
                continue
        except ValueError:
            pass
        if line.strip():
            torn.append(i)
    return records, torn


class RunDir:
    """The files of one run directory (`path`), and what may be done with them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.split = self.path / "split.json"
        self.metrics = self.path / "metrics.jsonl"
        self.last, self.prev = self.path / "last.pt", self.path / "prev.pt"
        self.last_tmp = self.path / "last.pt.tmp"       # a checkpoint being written, renamed to `last` once whole
        self.results = self.path / "results.json"
        self.launch = self.path / "launch.json"
        self.tensorboard: Path | None = self.path / "tb"
        self.tsne_plot = self.path / "features_tsne.png"

    def __str__(self) -> str:
        return str(self.path)

    # --- what it holds ---------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config.exists()

    def finished(self) -> bool:
        return self.results.exists()

    def has_checkpoint(self) -> bool:
        """Whether any checkpoint file is there (readable or not)."""
        return self.last.exists() or self.prev.exists()

    # --- lifecycle -------------------------------------------------------------------------------------
    def check(self, resume: bool, force: bool) -> None:
        """Never overwrite a run without resume or force (checks only: creates and deletes nothing). The messages
        name them as the caller does: `--force` from the command line, `force=True` from Python."""
        if resume:
            if not self.is_run():
                raise UserError(f"cannot resume: {self.path} holds no metassl run (no config.json)")
            return
        if self.path.exists() and not self.path.is_dir():
            raise UserError.worded("run directory {dir} is a file; pass another {out}", dir=self.path)
        if self.path.exists() and any(self.path.iterdir()) and not force:
            raise UserError.worded("run directory {dir} already exists; pass {resume} to continue it or {force} to "
                                   "overwrite it", dir=self.path)

    def start(self, force: bool, launch: str | None, cfg: Config, split: dict[str, Any]) -> None:
        """Create (or with force clear) the directory, mark the torchrun launch, write config and split; called
        only once all input has been validated. The launch mark comes before config.json (see `restarted`)."""
        self.check(False, force)
        if self.path.exists():
            for path in (self.last, self.prev, self.metrics, self.results, self.split, self.config, self.launch):
                path.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.mark_launch(launch)
        self.write_config(cfg)
        atomic_write_text(self.split, json.dumps(split))

    def mark_launch(self, launch: str | None) -> None:
        """Record which torchrun launch created the directory (nothing outside torchrun)."""
        if launch is not None:
            atomic_write_text(self.launch, json.dumps({"torchrun": launch}))

    def restarted(self, launch: str | None) -> str:
        """What a worker group that torchrun restarted does here (decided by rank 0): 'resume' the run this
        launch created; 'start-over' when this launch created it but was killed before config.json was
        written; 'new' when the run is not this launch's (none here, or one that the first attempt refused:
        the usual resume/force rules apply)."""
        try:
            mine = launch is not None and json.loads(self.launch.read_text()).get("torchrun") == launch
        except (OSError, ValueError, AttributeError):
            mine = False
        if not mine:
            return "new"
        return "resume" if self.is_run() else "start-over"

    # --- records ---------------------------------------------------------------------------------------
    def read_config(self) -> Config:
        """The saved config (as written: the caller drops keys its algorithm does not read)."""
        if not self.is_run():
            raise UserError(f"{self.path} holds no metassl run (no config.json)")
        return load_saved(self.config)

    def write_config(self, cfg: Config) -> None:
        atomic_write_text(self.config, json.dumps(to_dict(cfg), indent=1))

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results, json.dumps(results, indent=1))

    def read_results(self) -> dict[str, Any]:
        return json.loads(self.results.read_text())

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, iteration: int) -> None:
        """On resume: drop records written after the checkpoint being resumed from, and any line that is not a
        whole record (a power loss can tear the last one mid-write), with a warning."""
        if not self.metrics.exists():
            return
        records, torn = parse_records(self.metrics.read_text(errors="replace"))
        if torn:
            many = len(torn) > 1
            print(f"metassl: warning: {self.metrics} line{'s' * many} {', '.join(map(str, torn))} "
                  f"{'are' if many else 'is'} not a whole record (torn by a crash mid-write?); dropped", file=sys.stderr)
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records if r["iteration"] <= iteration))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl, warning once about lines that are not whole records."""
        if not self.metrics.is_file():
            raise UserError(f"{self.path} has no metrics.jsonl; pass a run directory written by `metassl train`")
        records, torn = parse_records(self.metrics.read_text(errors="replace"))
        if torn:
            print(f"metassl: warning: skipped {len(torn)} unreadable line(s) of {self.metrics}", file=sys.stderr)
        if not records:
            raise UserError(f"{self.metrics} holds no records yet; plot after the first logging step")
        return records


class InMemory:
    """A run trained with run_dir=None: the records a run directory would hold, kept here; no file is written
    and no checkpoint taken, so it cannot be resumed."""

    path = None
    tensorboard = None

    def __init__(self) -> None:
        self.config: Config | None = None
        self.split: dict[str, Any] | None = None
        self.metrics: list[dict[str, Any]] = []
        self.results: dict[str, Any] | None = None

    def __str__(self) -> str:
        return "memory"

    def check(self, resume: bool, force: bool) -> None:
        if resume:
            raise UserError("cannot resume a run trained in memory (run_dir=None); train into a run directory")

    def start(self, force: bool, launch: str | None, cfg: Config, split: dict[str, Any]) -> None:
        self.config, self.split = cfg, split

    def restarted(self, launch: str | None) -> str:
        return "new"

    def write_config(self, cfg: Config) -> None:
        self.config = cfg

    def write_results(self, results: dict[str, Any]) -> None:
        self.results = results

    def append_metrics(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)

    def truncate_metrics(self, iteration: int) -> None:
        self.metrics = [r for r in self.metrics if r["iteration"] <= iteration]

    def read_metrics(self) -> list[dict[str, Any]]:
        return list(self.metrics)
