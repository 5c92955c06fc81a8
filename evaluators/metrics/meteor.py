"""METEOR 1.5 through pycocoevalcap's jar, with the requests pipelined.

pycocoevalcap's ``Meteor.compute_score`` sends one ``SCORE`` line per caption and waits for its answer before
sending the next: 5,000 captions are 5,000 pipe round trips, which took ~50 s of a 60 s scoring run here.
This client speaks the same ``-stdio`` protocol to the same jar with the same arguments (so the numbers are
identical; tests/test_eval_metrics.py compares with COCOEvalCap), but a writer thread streams every
``SCORE`` line while the caller reads the statistics back, then one ``EVAL`` line yields the per-caption scores
and the corpus score. The statistics lines are kept: a bootstrap resample's METEOR is their sum sent back
through ``EVAL`` (:meth:`PipelinedMeteor.aggregate`).
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import pycocoevalcap.meteor.meteor as toolkit_meteor

JAR_DIR = Path(toolkit_meteor.__file__).resolve().parent
COMMAND = ["java", "-jar", "-Xmx2G", toolkit_meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]


class PipelinedMeteor:
    """A METEOR JVM answering whole batches; ``compute_score`` matches ``pycocoevalcap``'s signature."""

    def __init__(self, process: subprocess.Popen | None = None):
        """Start the JVM, or drive ``process``, a METEOR ``-stdio`` JVM started elsewhere (its owner closes it)."""
        if process is None:
            process = subprocess.Popen(COMMAND, cwd=JAR_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
            atexit.register(self.close)
        self.process = process
        self.lock = threading.Lock()

    @staticmethod
    def score_line(hypothesis: str, references: list[str]) -> str:
        """The toolkit's ``SCORE`` request (it cleans the hypothesis only, and so do we)."""
        hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
        return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))

    def _send(self, lines: Iterable[str]) -> threading.Thread:
        def write() -> None:
            try:
                for line in lines:
                    self.process.stdin.write(f"{line}\n".encode())
                self.process.stdin.flush()
            except BrokenPipeError:  # the reader reports the dead JVM
                pass

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        return writer

    def _read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the METEOR JVM ({' '.join(COMMAND)} in {JAR_DIR}) exited with code "
                               f"{self.process.poll()}; is Java installed?")
        return line.decode().strip()

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        corpus, scores, _ = self.score_with_statistics(gts, res)
        return corpus, scores

    def score_with_statistics(self, gts: dict, res: dict) -> tuple[float, list[float], list[str]]:
        """Corpus score, per-caption scores and the per-caption statistics lines (for bootstrap resamples)."""
        if gts.keys() != res.keys():
            raise ValueError("METEOR needs the same item keys for references and predictions")
        keys = list(gts)
        if not keys:
            raise ValueError("METEOR needs at least one caption")
        with self.lock:
            writer = self._send(self.score_line(res[k][0], gts[k]) for k in keys)
            stats = [self._read() for _ in keys]
            writer.join()
            writer = self._send(["EVAL ||| " + " ||| ".join(stats)])
            scores = [float(self._read()) for _ in keys]
            corpus = float(self._read())
            writer.join()
        return corpus, scores, stats

    def aggregate(self, totals: Iterable[Iterable[float]]) -> list[float]:
        """The corpus score of each row of summed statistics, one ``EVAL`` line per row.

        The jar's corpus score is computed from the element-wise sum of its segments' statistics, so a resample
        (a multiset of segments) is scored by sending that sum as one statistics line: ``EVAL ||| s1 ||| s2``
        equals ``EVAL ||| s1+s2`` (tested), and 1,000 resamples are 1,000 short lines, not 1,000 corpora.
        """
        lines = ["EVAL ||| " + " ".join(repr(float(x)) for x in row) for row in totals]
        with self.lock:
            writer = self._send(lines)
            scores = []
            for _ in lines:
                self._read()  # the one "segment" score
                scores.append(float(self._read()))
            writer.join()
        return scores

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


@lru_cache(maxsize=1)
def shared_meteor() -> PipelinedMeteor:
    """One METEOR JVM per process: starting it (loading its paraphrase tables) costs ~10 CPU-seconds, and the
    scorer keeps no state between calls, so every task of a run (and the leaderboard's tests) shares it."""
    return PipelinedMeteor()
